//! Status conditions with Kubernetes semantics: `TokenValid`, `TokenExpired` (its complement)
//! and `Ready` (what kstatus, Argo CD and Flux read). `lastTransitionTime` moves only when a
//! condition's status flips, so a steady org writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::reasons::Reason;

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
        type_: desired.type_.to_owned(),
        status: desired.status.as_str().to_owned(),
        reason: desired.reason.as_str().to_owned(),
        // The API server refuses messages over 32 KiB; ours are short, but never risk a write.
        message: truncate(desired.message, 1024),
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
}
