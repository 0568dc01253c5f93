use std::time::Duration;

use crate::conditions::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::{DeliveryState, NoticeKind, SalesforceOrgStatus, TokenState};
use crate::reasons::Reason;
use crate::reauth_record::ReauthFailure;

const UID: &str = "u1";
const HOUR: i64 = 3600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn cond(type_: &str, status: &str, reason: &str, since: i64) -> Condition {
    Condition {
        type_: type_.to_owned().into(),
        status: status.to_owned().into(),
        reason: reason.to_owned().into(),
        message: format!("{type_} {reason}").into(),
        last_transition_time: Time(at(since)),
        observed_generation: None,
    }
}

fn status(state: TokenState, since: i64) -> SalesforceOrgStatus {
    let (valid, expired) = match state {
        TokenState::Valid => ("True", "False"),
        TokenState::Expired => ("False", "True"),
        _ => ("Unknown", "Unknown"),
    };
    SalesforceOrgStatus {
        state: Some(state),
        conditions: vec![
            cond(conditions::TOKEN_VALID, valid, "R", since),
            cond(conditions::TOKEN_EXPIRED, expired, "R", since),
            cond(conditions::READY, valid, "RefreshTokenRevoked", since),
        ],
        org_id: Some("00D000000000001AAA".into()),
        authorized_by: Some("admin@acme.example".into()),
        authorized_at: Some(Time(at(0))),
        ..Default::default()
    }
}

fn policy(channels: &[&str]) -> Policy {
    Policy {
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        reminder_interval: Duration::from_secs(24 * 3600),
        reminder_max: 2,
    }
}

/// One reconcile: `before` (with the record) → `after`, returning the keys added.
fn step(
    before: &SalesforceOrgStatus,
    mut after: SalesforceOrgStatus,
    failure: Option<&ReauthFailure>,
    now: i64,
    p: &Policy,
) -> (
    SalesforceOrgStatus,
    Vec<(NoticeKind, String)>,
    Option<Duration>,
) {
    after.notifications = before.notifications.clone();
    let next = settle(UID, before, &mut after, failure, "acme", p, at(now));
    let added = after
        .notifications
        .iter()
        .filter(|r| {
            !before
                .notifications
                .iter()
                .any(|b| b.key == r.key && b.channel == r.channel)
        })
        .map(|r| (r.kind, r.channel.clone()))
        .collect();
    (after, added, next)
}

fn delivered(mut s: SalesforceOrgStatus) -> SalesforceOrgStatus {
    for r in &mut s.notifications {
        r.state = DeliveryState::Sent;
    }
    s
}

#[test]
fn expiry_reminders_and_recovery() {
    let p = policy(&["hook", "mail"]);
    let valid = status(TokenState::Valid, 0);
    // Steady valid: nothing.
    let (s, added, _) = step(&valid, valid.clone(), None, 10, &p);
    assert!(added.is_empty());
    assert_eq!(s, valid, "no write when nothing is due");

    // Expired: one Expired per channel, next look at the first reminder.
    let expired = status(TokenState::Expired, 100);
    let (s, added, next) = step(&valid, expired.clone(), None, 100, &p);
    assert_eq!(
        added,
        vec![
            (NoticeKind::Expired, "hook".into()),
            (NoticeKind::Expired, "mail".into())
        ]
    );
    assert_eq!(next, Some(Duration::from_secs(24 * 3600)));
    assert!(
        s.notifications
            .iter()
            .all(|r| r.state == DeliveryState::Pending)
    );
    assert!(s.notifications[0].key.starts_with("u1-expired-"));

    // Decided again (a restart, another replica): nothing new, whether delivered or not.
    let (_, added, _) = step(&s, expired.clone(), None, 200, &p);
    assert!(added.is_empty());
    let s = delivered(s);
    let (same, added, next) = step(&s, expired.clone(), None, 200, &p);
    assert!(added.is_empty());
    assert_eq!(same, s);
    assert_eq!(next, Some(Duration::from_secs((24 * HOUR - 100) as u64)));

    // A day later: reminder 1; then reminder 2; then nothing more (bounded).
    let (s, added, _) = step(&s, expired.clone(), None, 100 + 24 * HOUR, &p);
    assert_eq!(added.len(), 2);
    assert!(added.iter().all(|(k, _)| *k == NoticeKind::Reminder));
    let s = delivered(s);
    let (s, added, next) = step(&s, expired.clone(), None, 100 + 48 * HOUR + 5, &p);
    assert_eq!(added.len(), 2);
    assert_eq!(next, None);
    let s = delivered(s);
    let (s, added, _) = step(&s, expired.clone(), None, 100 + 30 * 24 * HOUR, &p);
    assert!(added.is_empty());

    // An outage (Unknown) then Expired again: the same expiry, no second Expired.
    let unknown = status(TokenState::Unknown, 500_000);
    let (s2, added, _) = step(&s, unknown.clone(), None, 500_000, &p);
    assert!(added.is_empty());
    let (_, added, _) = step(&s2, status(TokenState::Expired, 500_100), None, 500_100, &p);
    assert!(added.is_empty());

    // Recovered: one per channel naming who authorized; expiry records dropped.
    let valid_again = status(TokenState::Valid, 600_000);
    let (s, added, _) = step(&s, valid_again.clone(), None, 600_000, &p);
    assert_eq!(
        added,
        vec![
            (NoticeKind::Recovered, "hook".into()),
            (NoticeKind::Recovered, "mail".into())
        ]
    );
    assert!(
        s.notifications
            .iter()
            .all(|r| r.kind == NoticeKind::Recovered)
    );
    assert!(
        s.notifications[0]
            .message
            .as_deref()
            .unwrap()
            .contains("Re-authorized by admin@acme.example")
    );
    let s = delivered(s);
    let (same, added, _) = step(&s, valid_again.clone(), None, 600_100, &p);
    assert!(added.is_empty());
    assert_eq!(same, s);

    // A new expiry is a new transition: a new Expired, the Recovered records dropped.
    let (s, added, _) = step(&s, status(TokenState::Expired, 700_000), None, 700_000, &p);
    assert_eq!(added.len(), 2);
    assert!(
        s.notifications
            .iter()
            .all(|r| r.kind == NoticeKind::Expired)
    );
}

#[test]
fn only_the_latest_reminder_after_a_long_absence() {
    let p = Policy {
        reminder_max: 5,
        ..policy(&["hook"])
    };
    let expired = status(TokenState::Expired, 0);
    let (s, _, _) = step(&status(TokenState::Valid, 0), expired.clone(), None, 0, &p);
    let s = delivered(s);
    let (s, added, _) = step(&s, expired.clone(), None, 3 * 24 * HOUR + 1, &p);
    assert_eq!(added.len(), 1);
    assert_eq!(s.notifications.last().unwrap().reminder, Some(3));
}

#[test]
fn expiring_soon_refused_login_and_no_channels() {
    let p = policy(&["hook"]);
    let valid = status(TokenState::Valid, 0);
    let mut soon = valid.clone();
    soon.conditions.push(cond(
        conditions::TOKEN_EXPIRING_SOON,
        "True",
        "ExpiringSoon",
        50,
    ));
    soon.expiry_lead_time = Some("7d".into());
    let (s, added, _) = step(&valid, soon.clone(), None, 60, &p);
    assert_eq!(added, vec![(NoticeKind::ExpiringSoon, "hook".into())]);
    let s = delivered(s);
    let (_, added, _) = step(&s, soon.clone(), None, 70, &p);
    assert!(added.is_empty());
    // The second lead time (the condition stays True, the stage moves) is a new notice.
    let mut sooner = soon.clone();
    sooner.expiry_lead_time = Some("2d".into());
    let (s, added, _) = step(&s, sooner, None, 80, &p);
    assert_eq!(added.len(), 1);
    assert_eq!(
        s.notifications.len(),
        1,
        "the delivered first lead time is dropped"
    );
    // A False condition is not due.
    let mut not_soon = valid.clone();
    not_soon.conditions.push(cond(
        conditions::TOKEN_EXPIRING_SOON,
        "False",
        "NotSoon",
        90,
    ));
    let (_, added, _) = step(&valid, not_soon, None, 90, &p);
    assert!(added.is_empty());

    // A refused login: once per recorded failure.
    let expired = status(TokenState::Expired, 0);
    let mut base = step(&valid, expired.clone(), None, 0, &p).0;
    base = delivered(base);
    let failure = ReauthFailure {
        reason: Reason::AuthorizationDenied,
        description: "end-user denied authorization".into(),
        tokens: "42".into(),
    };
    let (s, added, _) = step(&base, expired.clone(), Some(&failure), 10, &p);
    assert_eq!(added, vec![(NoticeKind::ReauthRefused, "hook".into())]);
    let refused = s
        .notifications
        .iter()
        .find(|r| r.kind == NoticeKind::ReauthRefused)
        .unwrap();
    assert_eq!(refused.reason.as_deref(), Some("AuthorizationDenied"));
    let (_, added, _) = step(
        &delivered(s.clone()),
        expired.clone(),
        Some(&failure),
        20,
        &p,
    );
    assert!(added.is_empty());
    let other = ReauthFailure {
        reason: Reason::AuthorizationFailed,
        ..failure.clone()
    };
    let (_, added, _) = step(&delivered(s), expired.clone(), Some(&other), 30, &p);
    assert_eq!(added.len(), 1);

    // No channel: nothing recorded, nothing written.
    let none = policy(&[]);
    let (s, added, _) = step(&valid, expired, None, 0, &none);
    assert!(added.is_empty() && s.notifications.is_empty());
}

#[test]
fn pending_records_are_never_dropped_and_the_record_is_bounded() {
    let p = policy(&["hook"]);
    let (s, _, _) = step(
        &status(TokenState::Valid, 0),
        status(TokenState::Expired, 0),
        None,
        0,
        &p,
    );
    // Recovered before the Expired notice went out: it still goes out.
    let (s, added, _) = step(&s, status(TokenState::Valid, 10), None, 10, &p);
    assert_eq!(added, vec![(NoticeKind::Recovered, "hook".into())]);
    assert!(
        s.notifications
            .iter()
            .any(|r| r.kind == NoticeKind::Expired && r.state == DeliveryState::Pending)
    );

    let many: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let p = Policy {
        channels: many,
        ..policy(&[])
    };
    let (s, _, _) = step(
        &status(TokenState::Valid, 0),
        status(TokenState::Expired, 0),
        None,
        0,
        &p,
    );
    assert_eq!(
        s.notifications.len(),
        40,
        "pending records are kept past the bound"
    );
}
