//! What the re-auth callback leaves on objects for the reconciler to read: the contract
//! between the two, in one place so neither imports the other.
//!
//! - The last failed login through a link, as JSON in [`REAUTH_ERROR_ANNOTATION`] on the org
//!   (the callback never writes status; the reconciler reports it while the org needs a person).
//! - The OAuth `state` nonces already used, in [`USED_STATES_ANNOTATION`] on the token Secret,
//!   written in the same write as the tokens so two replicas cannot both accept one state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reasons::Reason;

/// Annotation on a SalesforceOrg: the last failed login through its re-auth link (JSON, see
/// [`ReauthFailure`]).
pub const REAUTH_ERROR_ANNOTATION: &str = "orgtokens.dev/reauth-error";
/// Annotation on a token Secret: the nonces of the states already used, with their expiry.
pub const USED_STATES_ANNOTATION: &str = "orgtokens.dev/used-reauth-states";
/// Annotation on a token Secret: the ids of the re-auth links a login succeeded through
/// (each link works once), with their expiry.
pub const USED_LINKS_ANNOTATION: &str = "orgtokens.dev/used-reauth-links";
/// Annotation on a token Secret: the Salesforce username whose login stored its tokens.
pub const AUTHORIZED_BY_ANNOTATION: &str = "orgtokens.dev/authorized-by";
/// Annotation on a token Secret: when that login stored them (RFC 3339).
pub const AUTHORIZED_AT_ANNOTATION: &str = "orgtokens.dev/authorized-at";
/// Used states (or links) remembered per org, at most (each is forgotten after its expiry).
pub const MAX_USED_STATES: usize = 50;

/// A failed login through the re-auth link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthFailure {
    /// The condition reason: a lost-authorization reason such as `ConnectedAppNotInstalled`,
    /// or `AuthorizationDenied` / `AuthorizationFailed`.
    pub reason: Reason,
    /// What Salesforce said (sanitized and bounded).
    #[serde(default)]
    pub description: String,
    /// The token Secret's resourceVersion at the time ("" without a Secret): once the tokens
    /// change, the failure is history.
    #[serde(default)]
    pub tokens: String,
}

impl ReauthFailure {
    /// The failure recorded on an org, if any. A hand-edited value that does not parse (an
    /// unknown reason, say) is ignored rather than trusted.
    pub fn read(annotations: &BTreeMap<String, String>) -> Option<Self> {
        annotations
            .get(REAUTH_ERROR_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok())
    }

    /// The annotation value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Used states in the annotation value `nonce:exp,nonce:exp`, without the expired ones.
pub fn used_states(annotations: &BTreeMap<String, String>, now: i64) -> Vec<(String, i64)> {
    used_entries(annotations, USED_STATES_ANNOTATION, now)
}

/// The `id:exp` entries of an annotation listing used states or links, without expired ones.
pub fn used_entries(
    annotations: &BTreeMap<String, String>,
    annotation: &str,
    now: i64,
) -> Vec<(String, i64)> {
    annotations
        .get(annotation)
        .map(|v| {
            v.split(',')
                .filter_map(|pair| {
                    let (nonce, exp) = pair.trim().split_once(':')?;
                    Some((nonce.to_owned(), exp.parse().ok()?))
                })
                .filter(|(_, exp)| *exp > now)
                .collect()
        })
        .unwrap_or_default()
}

/// The annotation value with `nonce` added (the oldest dropped beyond [`MAX_USED_STATES`]).
pub fn with_used_state(used: &[(String, i64)], nonce: &str, exp: i64) -> String {
    let mut all: Vec<(String, i64)> = used.to_vec();
    all.push((nonce.to_owned(), exp));
    let skip = all.len().saturating_sub(MAX_USED_STATES);
    all.iter()
        .skip(skip)
        .map(|(n, e)| format!("{n}:{e}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_states_are_pruned_and_bounded() {
        let now = 1000;
        let annotations = BTreeMap::from([(
            USED_STATES_ANNOTATION.to_owned(),
            "old:999,live:1600,junk,bad:x".to_owned(),
        )]);
        let used = used_states(&annotations, now);
        assert_eq!(used, vec![("live".to_owned(), 1600)]);
        assert_eq!(with_used_state(&used, "new", 1700), "live:1600,new:1700");
        let many: Vec<(String, i64)> = (0..60).map(|i| (format!("n{i}"), 2000)).collect();
        let value = with_used_state(&many, "last", 2000);
        assert_eq!(value.split(',').count(), MAX_USED_STATES);
        assert!(value.ends_with("last:2000"));
    }

    #[test]
    fn failures_round_trip_and_unknown_reasons_are_ignored() {
        let failure = ReauthFailure {
            reason: Reason::ConnectedAppBlocked,
            description: "blocked".into(),
            tokens: "7".into(),
        };
        let annotations = BTreeMap::from([(REAUTH_ERROR_ANNOTATION.to_owned(), failure.encode())]);
        assert_eq!(ReauthFailure::read(&annotations), Some(failure));
        let made_up = BTreeMap::from([(
            REAUTH_ERROR_ANNOTATION.to_owned(),
            r#"{"reason":"MadeUp","tokens":"7"}"#.to_owned(),
        )]);
        assert_eq!(ReauthFailure::read(&made_up), None);
        assert_eq!(ReauthFailure::read(&BTreeMap::new()), None);
    }
}
