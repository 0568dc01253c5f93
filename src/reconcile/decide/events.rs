//! The Events an org's reconcile publishes, built from what changed: one per state transition,
//! one per group of CronJobs suspended or resumed, one answering a person's check request,
//! and one when tokens held in memory finally reach the Secret.

use kube::runtime::events::{Event, EventType};

use crate::conditions;
use crate::crd::{SalesforceOrgStatus, TokenState};
use crate::dependents::Change;
use crate::messages::{MAX_NAMES_CHARS, name_list};

/// The reason of the Event that answers a requested check.
pub const CHECKED_EVENT: &str = "Checked";
/// The reason of the Event saying that tokens held in memory finally reached the Secret.
pub const PERSISTED_EVENT: &str = "TokenPersisted";

fn ready_reason(status: &SalesforceOrgStatus) -> (String, Option<String>) {
    let ready = conditions::get(&status.conditions, conditions::READY);
    (
        ready.map(|c| c.reason.to_string()).unwrap_or_default(),
        ready.map(|c| c.message.to_string()),
    )
}

/// One Event per state transition (`TokenValid`, `TokenExpired`, ...), with the reason and what
/// to do; none when the state stays.
pub fn transition(before: &SalesforceOrgStatus, after: &SalesforceOrgStatus) -> Option<Event> {
    if before.state == after.state {
        return None;
    }
    let state = after.state?;
    let (_, note) = ready_reason(after);
    let type_ = match state {
        TokenState::Valid | TokenState::Pending => EventType::Normal,
        _ => EventType::Warning,
    };
    Some(Event {
        type_,
        reason: format!("Token{state:?}"),
        note,
        action: "Check".into(),
        secondary: None,
    })
}

/// The reason of the Event saying that an authorization expires soon.
pub const EXPIRING_SOON_EVENT: &str = "TokenExpiringSoon";

/// A Warning Event when `TokenExpiringSoon` turns True, and again at each shorter lead time,
/// with the condition's message (when, and what to do).
pub fn expiring(before: &SalesforceOrgStatus, after: &SalesforceOrgStatus) -> Option<Event> {
    let now = conditions::get(&after.conditions, conditions::TOKEN_EXPIRING_SOON)
        .filter(|c| c.status == "True")?;
    let was = conditions::get(&before.conditions, conditions::TOKEN_EXPIRING_SOON)
        .is_some_and(|c| c.status == "True");
    if was && before.expiry_lead_time == after.expiry_lead_time {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: EXPIRING_SOON_EVENT.into(),
        note: Some(now.message.to_string()),
        action: "Forecast".into(),
        secondary: None,
    })
}

/// The reason of the Warning Event naming recipients outside the allowed domains.
pub const RECIPIENTS_REFUSED_EVENT: &str = "NotificationRecipientsRefused";

/// The Event when spec.notifications.recipients names addresses the administrator does not
/// allow: nothing is sent to them.
pub fn recipients_refused(refused: &[String]) -> Event {
    Event {
        type_: EventType::Warning,
        reason: RECIPIENTS_REFUSED_EVENT.into(),
        note: Some(format!(
            "Nothing is sent to {}: outside the recipient domains the cluster administrator allows \
             (--notification-recipient-domains). Use addresses in an allowed domain.",
            name_list(refused, MAX_NAMES_CHARS)
        )),
        action: "Notify".into(),
        secondary: None,
    }
}

/// The Event answering a person's check request with what the org is now.
pub fn checked(status: &SalesforceOrgStatus) -> Event {
    let state = status.state.unwrap_or_default();
    let (reason, _) = ready_reason(status);
    Event {
        type_: EventType::Normal,
        reason: CHECKED_EVENT.into(),
        note: Some(format!("Checked on request: {state:?} ({reason})")),
        action: "Check".into(),
        secondary: None,
    }
}

/// The Event when tokens the Secret refused are finally stored.
pub fn persisted(failed_writes: u32) -> Event {
    Event {
        type_: EventType::Normal,
        reason: PERSISTED_EVENT.into(),
        note: Some(format!(
            "Stored the tokens Salesforce issued earlier, after {failed_writes} refused \
             write(s) of the token Secret"
        )),
        action: "StoreTokens".into(),
        secondary: None,
    }
}

/// Events naming the CronJobs that `applied` changes suspended or resumed, and those someone
/// else resumed while the org holds them.
pub fn dependents(applied: &[Change], overridden: &[String]) -> Vec<Event> {
    let names = |pick: fn(&Change) -> bool| -> Vec<String> {
        applied
            .iter()
            .filter(|c| pick(c))
            .map(|c| c.name.clone())
            .collect()
    };
    let suspended = names(|c| c.suspend == Some(true) && !c.reasserted);
    let resumed = names(|c| c.suspend == Some(false));
    [
        (
            suspended,
            "CronJobsSuspended",
            EventType::Warning,
            "Suspended while the token is expired",
        ),
        (
            resumed,
            "CronJobsResumed",
            EventType::Normal,
            "Resumed now that the token is valid again",
        ),
        (
            overridden.to_vec(),
            "CronJobsResumedByAnotherWriter",
            EventType::Warning,
            "Resumed by someone else while the token is expired (suspended again with backoff)",
        ),
    ]
    .into_iter()
    .filter(|(names, ..)| !names.is_empty())
    .map(|(names, reason, type_, what)| Event {
        type_,
        reason: reason.into(),
        note: Some(format!("{what}: {}", name_list(&names, MAX_NAMES_CHARS))),
        action: "UpdateDependents".into(),
        secondary: None,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired, Status};
    use crate::reasons::Reason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeSet;

    fn status(state: Option<TokenState>, reason: Reason) -> SalesforceOrgStatus {
        let mut s = SalesforceOrgStatus {
            state,
            ..Default::default()
        };
        let desired = Desired {
            type_: conditions::READY,
            status: Status::False,
            reason,
            message: "what to do".into(),
        };
        conditions::set(
            &mut s.conditions,
            desired,
            Some(1),
            &Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        s
    }

    #[test]
    fn one_event_per_transition() {
        use TokenState::*;
        // (before, after, reason, warning)
        let cases = [
            (None, Some(Pending), Some("TokenPending"), false),
            (Some(Pending), Some(Valid), Some("TokenValid"), false),
            (Some(Valid), Some(Expired), Some("TokenExpired"), true),
            (Some(Valid), Some(Unknown), Some("TokenUnknown"), true),
            (Some(Expired), Some(Expired), None, false),
            (Some(Valid), Some(Valid), None, false),
        ];
        for (before, after, want, warning) in cases {
            let event = transition(
                &status(before, Reason::TokenValid),
                &status(after, Reason::RefreshTokenRevoked),
            );
            assert_eq!(
                event.as_ref().map(|e| e.reason.as_str()),
                want,
                "{before:?} → {after:?}"
            );
            if let Some(e) = event {
                assert_eq!(e.type_ == EventType::Warning, warning);
                assert_eq!(e.note.as_deref(), Some("what to do"));
            }
        }
    }

    #[test]
    fn expiring_soon_is_told_once_per_lead_time() {
        let with = |status, lead: Option<&str>| {
            let mut s = SalesforceOrgStatus::default();
            if let Some(status) = status {
                conditions::set(
                    &mut s.conditions,
                    Desired {
                        type_: conditions::TOKEN_EXPIRING_SOON,
                        status,
                        reason: Reason::ExpiringSoon,
                        message: "expires at T: log in".into(),
                    },
                    Some(1),
                    &Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                );
            }
            s.expiry_lead_time = lead.map(str::to_owned);
            s
        };
        let cases = [
            (with(None, None), with(Some(Status::False), None), false),
            (
                with(Some(Status::False), None),
                with(Some(Status::True), Some("7d")),
                true,
            ),
            (
                with(Some(Status::True), Some("7d")),
                with(Some(Status::True), Some("7d")),
                false,
            ),
            (
                with(Some(Status::True), Some("7d")),
                with(Some(Status::True), Some("2d")),
                true,
            ),
            (
                with(Some(Status::True), Some("2d")),
                with(Some(Status::False), None),
                false,
            ),
        ];
        for (i, (before, after, want)) in cases.into_iter().enumerate() {
            let event = expiring(&before, &after);
            assert_eq!(event.is_some(), want, "case {i}");
            if let Some(e) = event {
                assert_eq!(e.reason, EXPIRING_SOON_EVENT);
                assert_eq!(e.type_, EventType::Warning);
                assert_eq!(e.note.as_deref(), Some("expires at T: log in"));
            }
        }
    }

    #[test]
    fn checked_and_persisted_say_what_happened() {
        let e = checked(&status(
            Some(TokenState::Expired),
            Reason::ConnectedAppBlocked,
        ));
        assert_eq!(e.reason, CHECKED_EVENT);
        assert_eq!(
            e.note.as_deref(),
            Some("Checked on request: Expired (ConnectedAppBlocked)")
        );
        let e = persisted(3);
        assert_eq!(e.reason, PERSISTED_EVENT);
        assert!(e.note.is_some_and(|n| n.contains("after 3 refused")));
    }

    #[test]
    fn dependents_events_name_what_was_done() {
        let change = |name: &str, suspend, reasserted| Change {
            name: name.into(),
            suspend,
            holders: BTreeSet::new(),
            reasserted,
            version: None,
        };
        let applied = vec![
            change("a", Some(true), false),
            change("b", Some(true), true),
            change("c", Some(false), false),
            change("d", None, false),
        ];
        let events = dependents(&applied, &["b".into()]);
        let got: Vec<(&str, String)> = events
            .iter()
            .map(|e| (e.reason.as_str(), e.note.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "CronJobsSuspended",
                    "Suspended while the token is expired: a".to_owned()
                ),
                (
                    "CronJobsResumed",
                    "Resumed now that the token is valid again: c".to_owned()
                ),
                (
                    "CronJobsResumedByAnotherWriter",
                    "Resumed by someone else while the token is expired (suspended again with \
                     backoff): b"
                        .to_owned()
                ),
            ]
        );
        assert!(dependents(&[], &[]).is_empty());
    }
}
