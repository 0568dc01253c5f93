//! Status conditions with Kubernetes semantics: `TokenValid`, `TokenExpired` (its complement)
//! and `Ready` (what kstatus, Argo CD and Flux read). `lastTransitionTime` moves only when a
//! condition's status flips, so a steady org writes nothing.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Deserializer, Serialize};

use crate::messages;
use crate::reasons::Reason;

/// A status condition: Kubernetes' `metav1.Condition` on the wire and in the schema.
/// Its type, status and reason come from short fixed lists, so when read back they borrow
/// the operator's own spelling instead of each holding an allocation: every org's status stays
/// in the operator's cache for as long as the org exists. Anything else read back is kept as is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type (`TokenValid`, `Ready`, ...).
    #[serde(rename = "type", deserialize_with = "known_word")]
    pub type_: Cow<'static, str>,
    /// True, False or Unknown.
    #[serde(deserialize_with = "known_word")]
    pub status: Cow<'static, str>,
    /// Why, in CamelCase.
    #[serde(deserialize_with = "known_word")]
    pub reason: Cow<'static, str>,
    /// What happened and what to do. Shared: the token conditions say the same thing, and the
    /// operator's fixed messages are the same in every org.
    #[serde(deserialize_with = "known_message")]
    pub message: Arc<str>,
    /// When the status last changed.
    pub last_transition_time: Time,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl schemars::JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as schemars::JsonSchema>::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as schemars::JsonSchema>::schema_id()
    }

    fn inline_schema() -> bool {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as schemars::JsonSchema>::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as schemars::JsonSchema>::json_schema(generator)
    }
}

/// The operator's fixed condition messages, one copy each for all orgs.
static FIXED_MESSAGES: LazyLock<[Arc<str>; 2]> = LazyLock::new(|| {
    [
        messages::NONE_HELD.into(),
        messages::expiry::UNTIL_REVOKED.into(),
    ]
});

/// A condition message read back: the shared copy when it is one of the fixed messages.
fn known_message<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    let message = String::deserialize(deserializer)?;
    Ok(FIXED_MESSAGES
        .iter()
        .find(|fixed| ***fixed == *message)
        .cloned()
        .unwrap_or_else(|| message.into()))
}

/// Makes conditions with the same message share one copy of it (TokenValid, TokenExpired and
/// Ready always say the same thing).
pub fn share_messages(conditions: &mut [Condition]) {
    for i in 1..conditions.len() {
        let (earlier, rest) = conditions.split_at_mut(i);
        if let Some(same) = earlier.iter().find(|c| c.message == rest[0].message) {
            rest[0].message = same.message.clone();
        }
    }
}

/// A word of a condition read back: the operator's static spelling when it is one of its
/// condition types, statuses or reasons.
fn known_word<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'static, str>, D::Error> {
    let word = String::deserialize(deserializer)?;
    let known = [
        TOKEN_VALID,
        TOKEN_EXPIRED,
        READY,
        TOKEN_EXPIRING_SOON,
        DEPENDENTS_SUSPENDED,
    ]
    .into_iter()
    .chain([Status::True, Status::False, Status::Unknown].map(Status::as_str))
    .find(|known| *known == word)
    .or_else(|| Reason::parse(&word).map(Reason::as_str));
    Ok(known.map_or(Cow::Owned(word), Cow::Borrowed))
}

/// Condition type: the tokens work.
pub const TOKEN_VALID: &str = "TokenValid";
/// Condition type: a person has to re-authorize.
pub const TOKEN_EXPIRED: &str = "TokenExpired";
/// Condition type: the summary GitOps tools read.
pub const READY: &str = "Ready";
/// Condition type: the app's refresh token policy ends the authorization within a lead time
/// (or the keep-alive cannot outrun its idle limit): a person should log in again in time.
pub const TOKEN_EXPIRING_SOON: &str = "TokenExpiringSoon";
/// Condition type: the org holds dependent CronJobs suspended.
pub const DEPENDENTS_SUSPENDED: &str = "DependentsSuspended";

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// "True".
    True,
    /// "False".
    False,
    /// "Unknown".
    Unknown,
}

impl Status {
    /// The status as conditions carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// One desired condition, before times and generation are filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The condition type.
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: Status,
    /// Why.
    pub reason: Reason,
    /// What happened and what to do.
    pub message: String,
}

/// Sets `desired` in `conditions`: replaces the condition of the same type, keeping its
/// `lastTransitionTime` unless the status changed.
pub fn set(conditions: &mut Vec<Condition>, desired: Desired, generation: Option<i64>, now: &Time) {
    let existing = conditions.iter().position(|c| c.type_ == desired.type_);
    let transition = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == desired.status.as_str() => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: Cow::Borrowed(desired.type_),
        status: Cow::Borrowed(desired.status.as_str()),
        reason: Cow::Borrowed(desired.reason.as_str()),
        // The API server refuses messages over 32 KiB; ours are short, but never risk a write.
        message: truncate(desired.message, 1024).into(),
        last_transition_time: transition,
        observed_generation: generation,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

impl Status {
    /// A condition's status as read back ("True", "False", anything else is Unknown).
    pub fn parse(status: &str) -> Self {
        match status {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }
}

/// Finds a condition by type.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or_default())
    }

    fn d(status: Status, reason: Reason) -> Desired {
        Desired {
            type_: TOKEN_VALID,
            status,
            reason,
            message: "m".into(),
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_flip() {
        let mut c = Vec::new();
        set(&mut c, d(Status::True, Reason::TokenValid), Some(1), &t(10));
        assert_eq!(c[0].last_transition_time, t(10));
        // Same status, new reason and generation: time kept.
        set(
            &mut c,
            d(Status::True, Reason::AwaitingAuthorization),
            Some(2),
            &t(20),
        );
        assert_eq!(c[0].last_transition_time, t(10));
        assert_eq!(c[0].reason, "AwaitingAuthorization");
        assert_eq!(c[0].observed_generation, Some(2));
        // Flip: time moves.
        set(
            &mut c,
            d(Status::False, Reason::RefreshTokenRevoked),
            Some(2),
            &t(30),
        );
        assert_eq!(c[0].last_transition_time, t(30));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut c = Vec::new();
        let mut desired = d(Status::True, Reason::TokenValid);
        desired.message = "é".repeat(1000);
        set(&mut c, desired, None, &t(1));
        assert!(c[0].message.len() <= 1024);
    }

    #[test]
    fn conditions_read_back_borrow_known_words_and_keep_the_rest() {
        let read: Vec<Condition> = serde_json::from_value(serde_json::json!([
            {"type": "Ready", "status": "True", "reason": "TokenValid", "message": "ok",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2},
            {"type": "Other", "status": "Maybe", "reason": "Elsewhere", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]))
        .expect("conditions");
        assert!(matches!(read[0].type_, Cow::Borrowed("Ready")));
        assert!(matches!(read[0].status, Cow::Borrowed("True")));
        assert!(matches!(read[0].reason, Cow::Borrowed("TokenValid")));
        assert_eq!(
            (&*read[1].type_, &*read[1].status, &*read[1].reason),
            ("Other", "Maybe", "Elsewhere")
        );
        // Written back exactly as read.
        let written = serde_json::to_value(&read).expect("json");
        assert_eq!(written[0]["observedGeneration"], 2);
        assert_eq!(written[1]["reason"], "Elsewhere");
        assert!(written[1].get("observedGeneration").is_none());
    }

    #[test]
    fn equal_and_fixed_messages_are_shared() {
        let mut read: Vec<Condition> = serde_json::from_value(serde_json::json!([
            {"type": "TokenValid", "status": "True", "reason": "TokenValid", "message": "ok",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "TokenValid", "message": "ok",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "DependentsSuspended", "status": "False", "reason": "NoneHeld",
             "message": messages::NONE_HELD, "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]))
        .expect("conditions");
        assert!(!Arc::ptr_eq(&read[0].message, &read[1].message));
        share_messages(&mut read);
        assert!(Arc::ptr_eq(&read[0].message, &read[1].message));
        assert!(Arc::ptr_eq(&read[2].message, &FIXED_MESSAGES[0]));
        assert_eq!(&*read[1].message, "ok");
    }
}
