//! Which notifications are due, from the status before and after a reconcile, the record of
//! what was already decided (`status.notifications`), the last refused login and `now`.
//!
//! Each notice has an idempotency key made of the org's uid, its kind and the transition it
//! reports (the condition's lastTransitionTime, the reminder's number), so deciding again
//! after a restart or on another replica finds the same key in the record and adds nothing.
//! Records of past transitions are dropped once delivered, so the record stays small.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::conditions;
use crate::crd::{DeliveryState, NoticeKind, NotificationRecord, SalesforceOrgStatus, TokenState};
use crate::reauth_record::ReauthFailure;

/// Records kept at most (Pending ones are never dropped).
pub const MAX_RECORDS: usize = 32;

/// What the administrator and the org chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Channels to notify (the org's, else the administrator's default).
    pub channels: Vec<String>,
    /// Time between reminders while expired.
    pub reminder_interval: Duration,
    /// Reminders per expiry, at most.
    pub reminder_max: u32,
}

/// One notice that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Notice {
    key: String,
    kind: NoticeKind,
    reminder: Option<u32>,
    reason: Option<String>,
    message: Option<String>,
    since: Time,
}

fn unix(t: &Time) -> i64 {
    t.0.as_second()
}

fn ready(status: &SalesforceOrgStatus) -> (Option<String>, Option<String>) {
    let c = conditions::get(&status.conditions, conditions::READY);
    (
        c.map(|c| c.reason.to_string()),
        c.map(|c| c.message.to_string()),
    )
}

/// The short digest that names a refused login (the callback records no time).
fn failure_id(f: &ReauthFailure) -> String {
    let digest = Sha256::digest(format!(
        "{}\n{}\n{}",
        f.reason.as_str(),
        f.description,
        f.tokens
    ));
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Updates `after.notifications`: adds a Pending record per channel for each notice due,
/// drops delivered records of past transitions. Returns when to look again for the next
/// reminder, if one is still to come. `failure` is the refused login the callback recorded.
pub fn settle(
    uid: &str,
    before: &SalesforceOrgStatus,
    after: &mut SalesforceOrgStatus,
    failure: Option<&ReauthFailure>,
    org: &str,
    policy: &Policy,
    now: Timestamp,
) -> Option<Duration> {
    let record = &before.notifications;
    // The first Expired of the current expiry: later ones (after an outage turned the org
    // Unknown for a while) belong to the same expiry until it recovers.
    let expired = record.iter().find(|r| r.kind == NoticeKind::Expired);
    let (mut due, next) = expiry(uid, record, expired, after, policy, now);
    due.extend(recovered(uid, before, expired.is_some(), after));
    due.extend(expiring(uid, after));
    due.extend(refused(uid, failure, after, org, now));
    after.notifications = recorded(record, &due, after, policy, now);
    next
}

/// The Expired notice of the current expiry, or its reminder now due; and when the next
/// reminder is due.
fn expiry(
    uid: &str,
    record: &[NotificationRecord],
    expired: Option<&NotificationRecord>,
    after: &SalesforceOrgStatus,
    policy: &Policy,
    now: Timestamp,
) -> (Vec<Notice>, Option<Duration>) {
    if after.state != Some(TokenState::Expired) {
        return (Vec::new(), None);
    }
    let since = expired.map(|r| r.since.clone()).or_else(|| {
        conditions::get(&after.conditions, conditions::TOKEN_EXPIRED)
            .map(|c| c.last_transition_time.clone())
    });
    let Some(since) = since else {
        return (Vec::new(), None);
    };
    let (reason, message) = ready(after);
    let Some(first) = expired else {
        let notice = Notice {
            key: format!("{uid}-expired-{}", unix(&since)),
            kind: NoticeKind::Expired,
            reminder: None,
            reason,
            message,
            since,
        };
        let next = (policy.reminder_max > 0).then_some(policy.reminder_interval);
        return (vec![notice], next);
    };
    // Reminders count from the Expired notice, so an org found expired long ago gets its
    // Expired notice first and reminders after.
    let interval = policy.reminder_interval.as_secs().max(1) as i64;
    let start = unix(&first.decided_at);
    let elapsed = (now.as_second() - start).max(0);
    let n = u32::try_from(elapsed / interval)
        .unwrap_or(u32::MAX)
        .min(policy.reminder_max);
    let sent = record
        .iter()
        .filter(|r| r.kind == NoticeKind::Reminder)
        .filter_map(|r| r.reminder)
        .max()
        .unwrap_or(0);
    let mut due = Vec::new();
    // After a long outage of the operator only the latest reminder goes out.
    if n >= 1 && n > sent {
        due.push(Notice {
            key: format!("{uid}-reminder-{}-{n}", unix(&since)),
            kind: NoticeKind::Reminder,
            reminder: Some(n),
            reason,
            message,
            since,
        });
    }
    let next = (n < policy.reminder_max).then(|| {
        let at = start + interval * (i64::from(n) + 1);
        Duration::from_secs((at - now.as_second()).max(1) as u64)
    });
    (due, next)
}

/// Since when TokenValid is True, if it is.
fn valid_since(status: &SalesforceOrgStatus) -> Option<Time> {
    conditions::get(&status.conditions, conditions::TOKEN_VALID)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.clone())
}

/// Valid again after an expiry, naming who authorized.
fn recovered(
    uid: &str,
    before: &SalesforceOrgStatus,
    was_told_expired: bool,
    after: &SalesforceOrgStatus,
) -> Option<Notice> {
    let expired_before = was_told_expired || before.state == Some(TokenState::Expired);
    if after.state != Some(TokenState::Valid) || !expired_before {
        return None;
    }
    let since = valid_since(after)?;
    let (reason, message) = ready(after);
    let by = after.authorized_by.as_deref().map(|by| {
        let at = after
            .authorized_at
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".into());
        let org_id = after.org_id.as_deref().unwrap_or("unknown org");
        format!("Re-authorized by {by} at {at} ({org_id}).")
    });
    Some(Notice {
        key: format!("{uid}-recovered-{}", unix(&since)),
        kind: NoticeKind::Recovered,
        reminder: None,
        reason,
        message: Some(
            [message, by]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        ),
        since,
    })
}

/// The authorization expires soon: one notice per lead-time stage (7d, then 2d). The
/// condition stays True between them, and the forecast records the stage reached.
fn expiring(uid: &str, after: &SalesforceOrgStatus) -> Option<Notice> {
    let c = conditions::get(&after.conditions, conditions::TOKEN_EXPIRING_SOON)
        .filter(|c| c.status == "True")?;
    Some(Notice {
        key: format!(
            "{uid}-expiring-{}-{}-{}",
            unix(&c.last_transition_time),
            c.reason.to_ascii_lowercase(),
            after.expiry_lead_time.as_deref().unwrap_or("")
        ),
        kind: NoticeKind::ExpiringSoon,
        reminder: None,
        reason: Some(c.reason.to_string()),
        message: Some(c.message.to_string()),
        since: c.last_transition_time.clone(),
    })
}

/// A refused login through the re-auth link, once per recorded failure.
fn refused(
    uid: &str,
    failure: Option<&ReauthFailure>,
    after: &SalesforceOrgStatus,
    org: &str,
    now: Timestamp,
) -> Option<Notice> {
    let f = failure.filter(|_| after.state != Some(TokenState::Valid))?;
    let (reason, message) = crate::messages::failed_login(f.reason, &f.description, org)
        .map(|(r, m)| (r.as_str().to_owned(), m))
        .unwrap_or_else(|| (f.reason.as_str().to_owned(), f.description.clone()));
    Some(Notice {
        key: format!("{uid}-refused-{}", failure_id(f)),
        kind: NoticeKind::ReauthRefused,
        reminder: None,
        reason: Some(reason),
        message: Some(message),
        since: Time(now),
    })
}

/// The record after this reconcile: what still describes the present, and each due notice
/// not yet recorded as Pending on every channel; bounded, never dropping a Pending record.
fn recorded(
    record: &[NotificationRecord],
    due: &[Notice],
    after: &SalesforceOrgStatus,
    policy: &Policy,
    now: Timestamp,
) -> Vec<NotificationRecord> {
    let valid_since = valid_since(after);
    let live_keys: Vec<&str> = due.iter().map(|n| n.key.as_str()).collect();
    let keep = |r: &NotificationRecord| -> bool {
        if r.state == DeliveryState::Pending || live_keys.contains(&r.key.as_str()) {
            return true;
        }
        match r.kind {
            NoticeKind::Expired | NoticeKind::Reminder => after.state != Some(TokenState::Valid),
            NoticeKind::Recovered => {
                after.state != Some(TokenState::Expired)
                    && valid_since
                        .as_ref()
                        .is_some_and(|s| unix(s) == unix(&r.since))
            }
            NoticeKind::ExpiringSoon | NoticeKind::ReauthRefused => false,
        }
    };
    let mut kept: Vec<NotificationRecord> = record.iter().filter(|r| keep(r)).cloned().collect();
    for notice in due {
        if record.iter().any(|r| r.key == notice.key) {
            continue;
        }
        for channel in &policy.channels {
            kept.push(NotificationRecord {
                key: notice.key.clone(),
                channel: channel.clone(),
                kind: notice.kind,
                reminder: notice.reminder,
                reason: notice.reason.clone(),
                message: notice.message.clone().map(|m| truncate(m, 1024)),
                since: notice.since.clone(),
                decided_at: Time(now),
                state: DeliveryState::Pending,
                attempts: 0,
                sent_at: None,
                error: None,
            });
        }
    }
    // Bounded: the oldest delivered reminders go first, Pending records never.
    while kept.len() > MAX_RECORDS {
        let Some(i) = kept
            .iter()
            .position(|r| r.state != DeliveryState::Pending && r.kind != NoticeKind::Expired)
        else {
            break;
        };
        kept.remove(i);
    }
    kept
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests;
