//! Every condition reason the operator writes, in one enum.
//!
//! Reasons are an API: people grep for them, alerts match them, GitOps health checks read
//! them, and the callback records them on the org for the reconciler to report. One enum
//! (serialized as its CamelCase name) keeps the spelling in one place and lets a reason read
//! back from an annotation be checked instead of trusted.

use serde::{Deserialize, Serialize};

use crate::salesforce::LostReason;

/// A condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// Salesforce accepts the tokens.
    TokenValid,
    /// A web server org has no tokens yet: a person must log in.
    AwaitingAuthorization,
    /// `invalid_grant`: expired by policy, revoked, or a rotated-out token reused.
    RefreshTokenRevoked,
    /// The Salesforce user is deactivated.
    UserInactive,
    /// The Salesforce user is locked out.
    UserLocked,
    /// The Connected App is not installed in the org.
    ConnectedAppNotInstalled,
    /// An administrator blocked the Connected App.
    ConnectedAppBlocked,
    /// Salesforce does not know the consumer key.
    InvalidClientId,
    /// Salesforce refused the consumer secret.
    InvalidClientSecret,
    /// The user is not approved for the app.
    UserNotApproved,
    /// Logins from the operator's network are refused.
    IpRestricted,
    /// The JWT audience does not match the org type.
    InvalidAudience,
    /// The client credentials flow has no run-as user.
    NoClientCredentialsUser,
    /// The app requires the consumer secret to refresh, and the spec names none.
    RefreshSecretRequired,
    /// The app requires the consumer secret to finish a login, and the spec names none.
    WebServerSecretRequired,
    /// Salesforce refused for another documented reason.
    AuthorizationRefused,
    /// The tokens belong to another org than the pinned one.
    WrongOrg,
    /// The person chose Deny at Salesforce.
    AuthorizationDenied,
    /// A login through the link failed for a reason Salesforce did not name.
    AuthorizationFailed,
    /// Salesforce could not be reached or did not answer.
    SalesforceUnavailable,
    /// Salesforce's API request limit.
    RateLimited,
    /// Salesforce refused a JWT assertion because the clocks disagree.
    ClockSkew,
    /// New tokens wait in memory because the token Secret refused them.
    TokenNotPersisted,
    /// A login host outside the operator's allowlist.
    HostNotAllowed,
    /// The flow works only on the org's My Domain, and spec.loginUrl is not it.
    LoginUrlNotMyDomain,
    /// The JWT private key is unusable.
    InvalidPrivateKey,
    /// A spec the schema should have refused.
    InvalidSpec,
    /// A Secret named by the spec is missing or unusable.
    CredentialsSecretMissing,
    /// The token Secret holds something that is not tokens.
    TokenSecretMalformed,
    /// The Secret named by spec.tokenSecretRef belongs to something else.
    TokenSecretNotOwned,
    /// `DependentsSuspended`: CronJobs are held while the token is expired.
    TokenExpired,
    /// `DependentsSuspended`: someone resumes CronJobs the org holds.
    ResumedByAnotherWriter,
    /// `DependentsSuspended`: nothing is held any more.
    NoneHeld,
    /// `TokenExpiringSoon`: the authorization expires within a lead time.
    ExpiringSoon,
    /// `TokenExpiringSoon`: the authorization expires, but later than the longest lead time.
    ExpiresLater,
    /// `TokenExpiringSoon`: the policy is "valid until revoked".
    ValidUntilRevoked,
    /// `TokenExpiringSoon`: "expire if not used for" N, and the keep-alive refresh runs more
    /// often than N.
    KeptAlive,
    /// `TokenExpiringSoon`: "expire if not used for" N, and the keep-alive refresh is too rare
    /// to outrun it.
    KeepAliveTooLong,
    /// `TokenExpiringSoon`: the policy expires, but when the authorization happened is unknown.
    ExpiryUnknown,
    /// `TokenExpiringSoon`: a headless flow gets tokens without a person; nothing expires.
    NoRefreshToken,
}

impl Reason {
    /// The reason with this CamelCase name.
    pub fn parse(name: &str) -> Option<Self> {
        use serde::de::IntoDeserializer;
        let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            name.into_deserializer();
        Self::deserialize(name).ok()
    }

    /// The reason as conditions carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenValid => "TokenValid",
            Reason::AwaitingAuthorization => "AwaitingAuthorization",
            Reason::RefreshTokenRevoked => "RefreshTokenRevoked",
            Reason::UserInactive => "UserInactive",
            Reason::UserLocked => "UserLocked",
            Reason::ConnectedAppNotInstalled => "ConnectedAppNotInstalled",
            Reason::ConnectedAppBlocked => "ConnectedAppBlocked",
            Reason::InvalidClientId => "InvalidClientId",
            Reason::InvalidClientSecret => "InvalidClientSecret",
            Reason::UserNotApproved => "UserNotApproved",
            Reason::IpRestricted => "IpRestricted",
            Reason::InvalidAudience => "InvalidAudience",
            Reason::NoClientCredentialsUser => "NoClientCredentialsUser",
            Reason::RefreshSecretRequired => "RefreshSecretRequired",
            Reason::WebServerSecretRequired => "WebServerSecretRequired",
            Reason::AuthorizationRefused => "AuthorizationRefused",
            Reason::WrongOrg => "WrongOrg",
            Reason::AuthorizationDenied => "AuthorizationDenied",
            Reason::AuthorizationFailed => "AuthorizationFailed",
            Reason::SalesforceUnavailable => "SalesforceUnavailable",
            Reason::RateLimited => "RateLimited",
            Reason::ClockSkew => "ClockSkew",
            Reason::TokenNotPersisted => "TokenNotPersisted",
            Reason::HostNotAllowed => "HostNotAllowed",
            Reason::LoginUrlNotMyDomain => "LoginUrlNotMyDomain",
            Reason::InvalidPrivateKey => "InvalidPrivateKey",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::CredentialsSecretMissing => "CredentialsSecretMissing",
            Reason::TokenSecretMalformed => "TokenSecretMalformed",
            Reason::TokenSecretNotOwned => "TokenSecretNotOwned",
            Reason::TokenExpired => "TokenExpired",
            Reason::ResumedByAnotherWriter => "ResumedByAnotherWriter",
            Reason::NoneHeld => "NoneHeld",
            Reason::ExpiringSoon => "ExpiringSoon",
            Reason::ExpiresLater => "ExpiresLater",
            Reason::ValidUntilRevoked => "ValidUntilRevoked",
            Reason::KeptAlive => "KeptAlive",
            Reason::KeepAliveTooLong => "KeepAliveTooLong",
            Reason::ExpiryUnknown => "ExpiryUnknown",
            Reason::NoRefreshToken => "NoRefreshToken",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<LostReason> for Reason {
    fn from(reason: LostReason) -> Self {
        match reason {
            LostReason::RefreshTokenRevoked => Reason::RefreshTokenRevoked,
            LostReason::UserInactive => Reason::UserInactive,
            LostReason::UserLocked => Reason::UserLocked,
            LostReason::ConnectedAppNotInstalled => Reason::ConnectedAppNotInstalled,
            LostReason::ConnectedAppBlocked => Reason::ConnectedAppBlocked,
            LostReason::InvalidClientId => Reason::InvalidClientId,
            LostReason::InvalidClientSecret => Reason::InvalidClientSecret,
            LostReason::UserNotApproved => Reason::UserNotApproved,
            LostReason::IpRestricted => Reason::IpRestricted,
            LostReason::InvalidAudience => Reason::InvalidAudience,
            LostReason::NoClientCredentialsUser => Reason::NoClientCredentialsUser,
            LostReason::RefreshSecretRequired => Reason::RefreshSecretRequired,
            LostReason::WebServerSecretRequired => Reason::WebServerSecretRequired,
            LostReason::Refused => Reason::AuthorizationRefused,
        }
    }
}

impl Reason {
    /// The lost-authorization cause behind a reason, if it is one.
    pub fn lost(self) -> Option<LostReason> {
        Some(match self {
            Reason::RefreshTokenRevoked => LostReason::RefreshTokenRevoked,
            Reason::UserInactive => LostReason::UserInactive,
            Reason::UserLocked => LostReason::UserLocked,
            Reason::ConnectedAppNotInstalled => LostReason::ConnectedAppNotInstalled,
            Reason::ConnectedAppBlocked => LostReason::ConnectedAppBlocked,
            Reason::InvalidClientId => LostReason::InvalidClientId,
            Reason::InvalidClientSecret => LostReason::InvalidClientSecret,
            Reason::UserNotApproved => LostReason::UserNotApproved,
            Reason::IpRestricted => LostReason::IpRestricted,
            Reason::InvalidAudience => LostReason::InvalidAudience,
            Reason::NoClientCredentialsUser => LostReason::NoClientCredentialsUser,
            Reason::RefreshSecretRequired => LostReason::RefreshSecretRequired,
            Reason::WebServerSecretRequired => LostReason::WebServerSecretRequired,
            Reason::AuthorizationRefused => LostReason::Refused,
            _ => return None,
        })
    }
}

/// A problem the spec, its Secrets or the cluster administrator's settings must fix, found
/// before anything is asked of Salesforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misconfiguration {
    /// The condition reason.
    pub reason: Reason,
    /// What to do.
    pub message: String,
}

impl Misconfiguration {
    /// A problem with its reason and what to do.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_spelling_is_the_condition_spelling() {
        for reason in [
            Reason::TokenValid,
            Reason::ConnectedAppNotInstalled,
            Reason::AuthorizationRefused,
            Reason::TokenSecretNotOwned,
            Reason::NoneHeld,
            Reason::ExpiringSoon,
            Reason::KeptAlive,
        ] {
            let json = serde_json::to_string(&reason).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            let back: Reason = serde_json::from_str(&json).unwrap_or(Reason::NoneHeld);
            assert_eq!(back, reason);
        }
        assert!(serde_json::from_str::<Reason>("\"MadeUp\"").is_err());
    }

    #[test]
    fn lost_reasons_round_trip() {
        for lost in [
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
        ] {
            assert_eq!(Reason::from(lost).lost(), Some(lost));
        }
        assert_eq!(Reason::WrongOrg.lost(), None);
    }
}
