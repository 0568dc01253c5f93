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
        authorized_by: None,
        authorized_at: None,
        policy: Some(TokenPolicy::ValidUntilRevoked),
        lead_times: crate::reconcile::context::DEFAULT_EXPIRY_LEAD_TIMES.to_vec(),
        unrecorded_holds: false,
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
    let ready = conditions::get(&after.conditions, conditions::READY).map(|c| c.status.as_ref());
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
            link::plan(web, links, state, false, current, verifies, now()),
            want,
            "{what}"
        );
    }
    // Expiring soon: a Valid (or Unknown) web org gets a link ready, kept and renewed like
    // any other, and loses it once no longer expiring soon.
    type SoonRow<'a> = (
        &'a str,
        bool,
        Option<TokenState>,
        bool,
        Option<&'a ReauthLink>,
        LinkPlan,
    );
    let soon: Vec<SoonRow> = vec![
        (
            "valid, expiring soon: issued",
            true,
            Some(Valid),
            true,
            None,
            Issue,
        ),
        (
            "valid, expiring soon: kept",
            true,
            Some(Valid),
            true,
            Some(&fresh),
            Keep,
        ),
        (
            "valid, expiring soon: renewed",
            true,
            Some(Valid),
            true,
            Some(&expiring),
            Issue,
        ),
        (
            "unknown, expiring soon: issued",
            true,
            Some(Unknown),
            true,
            None,
            Issue,
        ),
        (
            "valid, no longer expiring: removed",
            true,
            Some(Valid),
            false,
            Some(&fresh),
            Remove,
        ),
        ("headless never", false, Some(Valid), true, None, Keep),
    ];
    for (what, web, state, expiring_soon, current, want) in soon {
        assert_eq!(
            link::plan(web, true, state, expiring_soon, current, true, now()),
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
    (
        c.status.to_string(),
        c.reason.to_string(),
        c.message.to_string(),
    )
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
        (c.status.as_ref(), c.reason.as_ref()),
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

// ----- expiry forecast -----

const DAY: Duration = Duration::from_secs(86_400);

fn ago(d: Duration) -> Timestamp {
    now() - SignedDuration::try_from(d).unwrap_or_default()
}

fn later(d: Duration) -> Timestamp {
    now() + SignedDuration::try_from(d).unwrap_or_default()
}

fn facts(policy: Option<TokenPolicy>, authorized_ago: Option<Duration>) -> forecast::Facts {
    forecast::Facts {
        web_server: true,
        state: Some(TokenState::Valid),
        policy,
        authorized_at: authorized_ago.map(ago),
        authorized_by: Some("backup@acme.com".into()),
        last_refreshed_at: None,
        keepalive: DAY,
        interval: 15 * MIN,
        lead_times: vec![7 * DAY, 2 * DAY],
        relogin: crate::messages::Relogin::Link,
    }
}

#[test]
fn forecast_table() {
    use TokenPolicy::*;
    use conditions::Status::{False, True, Unknown};
    let after_90 = Some(ExpireAfter(90 * DAY));
    let idle_30 = Some(ExpireIfNotUsedFor(30 * DAY));
    let idle_20h = Some(ExpireIfNotUsedFor(20 * 3600 * Duration::from_secs(1)));
    // (what, facts, status, reason, expires in (from now), lead reached, next change in)
    type Row = (
        &'static str,
        forecast::Facts,
        conditions::Status,
        Reason,
        Option<Duration>,
        Option<Duration>,
        Option<Duration>,
    );
    let mut headless = facts(after_90, Some(DAY));
    headless.web_server = false;
    let mut pending = facts(after_90, None);
    pending.state = Some(TokenState::Pending);
    let mut expired = facts(after_90, Some(91 * DAY));
    expired.state = Some(TokenState::Expired);
    let mut outage = facts(after_90, Some(85 * DAY));
    outage.state = Some(TokenState::Unknown);
    let mut refreshed = facts(idle_20h, Some(5 * DAY));
    refreshed.last_refreshed_at = Some(ago(3600 * Duration::from_secs(1)));
    let mut short_keepalive = facts(idle_20h, Some(5 * DAY));
    short_keepalive.keepalive = 12 * 3600 * Duration::from_secs(1);
    let mut no_leads = facts(after_90, Some(DAY));
    no_leads.lead_times = Vec::new();
    let rows: Vec<Row> = vec![
        (
            "valid until revoked",
            facts(Some(ValidUntilRevoked), Some(DAY)),
            False,
            Reason::ValidUntilRevoked,
            None,
            None,
            None,
        ),
        (
            "expire after 90d, 1d old: later; next change at the 7d lead",
            facts(after_90, Some(DAY)),
            False,
            Reason::ExpiresLater,
            Some(89 * DAY),
            None,
            Some(82 * DAY),
        ),
        (
            "expire after 90d, 84d old: 7d lead reached; next at the 2d lead",
            facts(after_90, Some(84 * DAY)),
            True,
            Reason::ExpiringSoon,
            Some(6 * DAY),
            Some(7 * DAY),
            Some(4 * DAY),
        ),
        (
            "exactly at the 7d lead: reached",
            facts(after_90, Some(83 * DAY)),
            True,
            Reason::ExpiringSoon,
            Some(7 * DAY),
            Some(7 * DAY),
            Some(5 * DAY),
        ),
        (
            "89d old: 2d lead reached; next at the expiry",
            facts(after_90, Some(89 * DAY)),
            True,
            Reason::ExpiringSoon,
            Some(DAY),
            Some(2 * DAY),
            Some(DAY),
        ),
        (
            "an outage does not stop the forecast",
            outage,
            True,
            Reason::ExpiringSoon,
            Some(5 * DAY),
            Some(7 * DAY),
            Some(3 * DAY),
        ),
        (
            "no lead times: never soon",
            no_leads,
            False,
            Reason::ExpiresLater,
            Some(89 * DAY),
            None,
            Some(89 * DAY),
        ),
        (
            "tokens stored by hand, no authorized-at: unknown",
            facts(after_90, None),
            Unknown,
            Reason::ExpiryUnknown,
            None,
            None,
            None,
        ),
        (
            "idle 30d, keep-alive 1d: kept alive",
            facts(idle_30, Some(40 * DAY)),
            False,
            Reason::KeptAlive,
            None,
            None,
            None,
        ),
        (
            "idle 20h, keep-alive 12h (+15m checks): kept alive",
            short_keepalive,
            False,
            Reason::KeptAlive,
            None,
            None,
            None,
        ),
        (
            "idle 20h, keep-alive 1d: warns, expires 20h after the last refresh",
            refreshed,
            True,
            Reason::KeepAliveTooLong,
            Some(19 * 3600 * Duration::from_secs(1)),
            Some(2 * DAY),
            Some(19 * 3600 * Duration::from_secs(1)),
        ),
        (
            "headless flows have no refresh token",
            headless,
            False,
            Reason::NoRefreshToken,
            None,
            None,
            None,
        ),
        (
            "pending: nothing to expire",
            pending,
            False,
            Reason::AwaitingAuthorization,
            None,
            None,
            None,
        ),
        (
            "expired: already ended",
            expired,
            False,
            Reason::TokenExpired,
            None,
            None,
            None,
        ),
        (
            "invalid policy",
            facts(None, Some(DAY)),
            Unknown,
            Reason::InvalidSpec,
            None,
            None,
            None,
        ),
    ];
    for (what, f, status, reason, expires_in, lead, next_in) in rows {
        let got = forecast::of(&f, now());
        assert_eq!(got.status, status, "{what}: {}", got.message);
        assert_eq!(got.reason, reason, "{what}");
        assert_eq!(got.expires_at, expires_in.map(later), "{what}");
        assert_eq!(got.lead_time, lead, "{what}");
        assert_eq!(got.next_change, next_in.map(later), "{what}");
        assert!(!got.message.is_empty(), "{what}");
    }
}

#[test]
fn forecast_messages_say_when_and_what_to_do() {
    let f = facts(Some(TokenPolicy::ExpireAfter(90 * DAY)), Some(89 * DAY));
    let got = forecast::of(&f, now());
    let expires = later(DAY).to_string();
    for part in [
        expires.as_str(),
        "backup@acme.com",
        "expire after 90d",
        "the 2d notice time",
        "status.reauth.url",
    ] {
        assert!(got.message.contains(part), "{part:?} in {}", got.message);
    }
    let kept = forecast::of(
        &facts(Some(TokenPolicy::ExpireIfNotUsedFor(30 * DAY)), Some(DAY)),
        now(),
    );
    assert!(
        kept.message.contains("never goes unused"),
        "{}",
        kept.message
    );
    let unknown = forecast::of(&facts(Some(TokenPolicy::ExpireAfter(DAY)), None), now());
    assert!(
        unknown.message.contains("orgtokens.dev/authorized-at"),
        "{}",
        unknown.message
    );
    // Absolute times only: the same forecast an hour later reads the same.
    let f = facts(Some(TokenPolicy::ExpireAfter(90 * DAY)), Some(85 * DAY));
    let a = forecast::of(&f, now());
    let b = forecast::of(&f, later(3600 * Duration::from_secs(1)));
    assert_eq!(a.message, b.message);
}

#[test]
fn lead_time_stages_move_one_by_one() {
    // An authorization expiring in exactly 8 days, watched as time passes.
    let f = facts(Some(TokenPolicy::ExpireAfter(90 * DAY)), Some(82 * DAY));
    let expires = later(8 * DAY);
    let mut stages = Vec::new();
    let mut at = now();
    while let Some(next) = forecast::of(&f, at).next_change {
        let fc = forecast::of(&f, at);
        stages.push((fc.status, fc.lead_time));
        at = next;
    }
    let last = forecast::of(&f, at);
    stages.push((last.status, last.lead_time));
    use conditions::Status::{False, True};
    assert_eq!(
        stages,
        vec![
            (False, None),
            (True, Some(7 * DAY)),
            (True, Some(2 * DAY)),
            (True, Some(2 * DAY)),
        ],
        "later, then 7d, then 2d, then expired (no further change)"
    );
    assert_eq!(at, expires);
    assert_eq!(
        forecast::until(later(Duration::from_secs(30)), now()),
        Duration::from_secs(30)
    );
    assert_eq!(
        forecast::until(ago(DAY), now()),
        Duration::from_secs(1),
        "never zero"
    );
}

fn valid_memo(ago_: Duration) -> Memo {
    Memo {
        verdict: Some(Verdict::Valid {
            identity: identity("00D000000000001AAA"),
            instance_url: None,
            renewed: false,
        }),
        ..memo(ago_, 0, Fingerprint::default())
    }
}

#[test]
fn the_condition_flips_at_the_lead_time_by_requeue_and_writes_once() {
    // Authorized 83 days minus 30 seconds ago under "expire after 90d": the 7d lead time is
    // 30 seconds away, the check interval 15 minutes.
    let tokens = tokens(true, true, MIN);
    let mut g = observed(
        FlowKind::WebServer,
        &tokens,
        &SalesforceOrgStatus::default(),
        None,
    );
    g.policy = Some(TokenPolicy::ExpireAfter(90 * DAY));
    g.authorized_by = Some("backup@acme.com".into());
    g.authorized_at = Some(Time(
        later(Duration::from_secs(30)) - SignedDuration::from_hours(83 * 24),
    ));
    g.memo = Some(valid_memo(MIN));
    let fresh_link = link(24 * 60);
    g.link = LinkFacts {
        served: true,
        verifies: false,
        fresh: Some(fresh_link.clone()),
    };
    let p = plan(&g, now());
    assert_eq!(p, Plan::Wait(14 * MIN));
    let first = outcome(&g, &p, None, now());
    assert_eq!(
        first.requeue,
        Duration::from_secs(30),
        "requeued for the lead time"
    );
    let cond = conditions::get(&first.status.conditions, conditions::TOKEN_EXPIRING_SOON)
        .cloned()
        .unwrap();
    assert_eq!(
        (cond.status.as_ref(), cond.reason.as_ref()),
        ("False", "ExpiresLater")
    );
    assert_eq!(first.status.reauth, None);
    assert!(first.status.authorization_expires_at.is_some());

    // Re-deciding with nothing new writes nothing.
    g.status = first.status.clone();
    let again = outcome(&g, &plan(&g, now()), None, now());
    assert_eq!(again.status, g.status, "steady: no write");

    // At the lead time: True, the 7d stage, a link ready; requeued for the 2d stage or the
    // check interval, whichever is first.
    let at = later(Duration::from_secs(30));
    let p = plan(&g, at);
    let second = outcome(&g, &p, None, at);
    let cond = conditions::get(&second.status.conditions, conditions::TOKEN_EXPIRING_SOON)
        .cloned()
        .unwrap();
    assert_eq!(
        (cond.status.as_ref(), cond.reason.as_ref()),
        ("True", "ExpiringSoon")
    );
    assert_eq!(cond.observed_generation, Some(1));
    assert_eq!(second.status.expiry_lead_time.as_deref(), Some("7d"));
    assert_eq!(second.status.reauth, Some(fresh_link), "a link is ready");
    assert!(second.requeue <= 14 * MIN, "{:?}", second.requeue);
    assert_eq!(second.status.state, Some(TokenState::Valid));

    // A login through the link moves authorizedAt: the forecast moves, the link goes.
    g.status = second.status.clone();
    g.link.verifies = true;
    g.authorized_at = Some(Time(
        Timestamp::from_second(at.as_second()).unwrap_or_default(),
    ));
    let third = outcome(&g, &plan(&g, at), None, at);
    let cond = conditions::get(&third.status.conditions, conditions::TOKEN_EXPIRING_SOON)
        .cloned()
        .unwrap();
    assert_eq!(
        (cond.status.as_ref(), cond.reason.as_ref()),
        ("False", "ExpiresLater")
    );
    assert_eq!(third.status.expiry_lead_time, None);
    assert_eq!(
        third.status.reauth, None,
        "no link once no longer expiring soon"
    );
    assert_eq!(
        third.status.authorization_expires_at.map(|t| t.0),
        Some(
            Timestamp::from_second(at.as_second()).unwrap_or_default()
                + SignedDuration::from_hours(90 * 24)
        )
    );
}

#[test]
fn the_forecast_expiry_triggers_a_refresh_at_once() {
    let tokens = tokens(true, true, MIN);
    let mut status = SalesforceOrgStatus {
        authorization_expires_at: Some(Time(ago(Duration::from_secs(5)))),
        ..Default::default()
    };
    let recent = valid_memo(MIN);
    let g = observed(FlowKind::WebServer, &tokens, &status, Some(&recent));
    assert_eq!(
        plan(&g, now()),
        Plan::Check(CheckKind::Validate { renew_first: true }),
        "checked before the expiry: try the refresh token now"
    );
    let after = valid_memo(Duration::from_secs(1));
    let g = observed(FlowKind::WebServer, &tokens, &status, Some(&after));
    assert_eq!(
        plan(&g, now()),
        Plan::Wait(14 * MIN + Duration::from_secs(59)),
        "already checked since the expiry: only once"
    );
    let g = observed(FlowKind::WebServer, &tokens, &status, None);
    assert_eq!(
        plan(&g, now()),
        Plan::Check(CheckKind::Validate { renew_first: true }),
        "a new leader past the expiry tries the refresh token too"
    );
    // Even when the status is otherwise current (no waiting for the org's slot).
    let mut current = current_status(TokenState::Valid);
    current.authorization_expires_at = Some(Time(ago(Duration::from_secs(5))));
    let g = Gathered {
        fingerprint: on_secret("7"),
        ..observed(FlowKind::WebServer, &tokens, &current, None)
    };
    assert_eq!(
        plan(&g, now()),
        Plan::Check(CheckKind::Validate { renew_first: true }),
        "a current status past its forecast expiry is checked at once"
    );
    current.authorization_expires_at = Some(Time(later(DAY)));
    let g = Gathered {
        fingerprint: on_secret("7"),
        ..observed(FlowKind::WebServer, &tokens, &current, None)
    };
    assert!(
        matches!(plan(&g, now()), Plan::Slot(_)),
        "before the expiry a current status waits for its slot"
    );
    status.authorization_expires_at = Some(Time(later(MIN)));
    let g = observed(FlowKind::WebServer, &tokens, &status, Some(&recent));
    assert_eq!(plan(&g, now()), Plan::Wait(14 * MIN), "not yet");
    let g = observed(FlowKind::WebServer, &tokens, &status, None);
    assert_eq!(
        plan(&g, now()),
        Plan::Check(CheckKind::Validate { renew_first: false }),
        "not yet: a plain first check"
    );
}

#[test]
fn the_last_use_is_the_later_of_the_last_refresh_and_the_tokens_issue_time() {
    let tokens = tokens(true, true, 120 * MIN);
    let mut status = SalesforceOrgStatus::default();
    let g = observed(FlowKind::WebServer, &tokens, &status, None);
    assert_eq!(
        forecast::Facts::of(&g, &status).last_refreshed_at,
        Some(ago(120 * MIN))
    );
    status.last_refreshed_at = Some(Time(ago(MIN)));
    assert_eq!(
        forecast::Facts::of(&g, &status).last_refreshed_at,
        Some(ago(MIN))
    );
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
    // The forecast of the default policy, as every status the operator writes has it.
    let mut f = facts(Some(TokenPolicy::ValidUntilRevoked), None);
    f.state = Some(state);
    forecast::of(&f, now()).apply(&mut s, Some(1), now());
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
            "a CronJob carries a hold the status does not record",
            Gathered {
                unrecorded_holds: true,
                ..case(&valid, on_secret("7"))
            },
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

#[test]
fn the_finalizer_comes_just_before_the_first_hold() {
    let status = expired_status();
    let o = observed(FlowKind::WebServer, &tokens(true, true, MIN), &status, None);
    let view = |holders: &[&str], suspended: bool, selected: bool| CronJobView {
        name: "nightly".into(),
        suspended,
        holders: holders.iter().map(|h| (*h).to_owned()).collect(),
        selected,
        may_reassert: true,
        reassert_in: Duration::ZERO,
        version: None,
    };
    let with = |cronjobs: &[CronJobView]| {
        let mut out = outcome(&o, &Plan::Wait(15 * MIN), None, now());
        dependents(&mut out, &o, cronjobs, now());
        out
    };
    // (what, CronJobs, has the finalizer, needs it)
    let cases = [
        (
            "a running CronJob to suspend",
            view(&[], false, true),
            false,
            true,
        ),
        ("already given", view(&[], false, true), true, false),
        (
            "a hold shared with another org",
            view(&["other"], true, true),
            false,
            true,
        ),
        (
            "a person's own suspension",
            view(&[], true, true),
            false,
            false,
        ),
        ("not selected", view(&[], false, false), false, false),
        ("letting go", view(&["acme"], true, false), true, false),
    ];
    for (what, cronjob, has, needs) in cases {
        let out = with(std::slice::from_ref(&cronjob));
        assert_eq!(needs_finalizer(&o, &out, has), needs, "{what}");
    }
    // Nothing to do with CronJobs (a Valid org): never.
    let valid = outcome(&o, &Plan::Wait(15 * MIN), None, now());
    assert!(!needs_finalizer(&o, &valid, false));
}
