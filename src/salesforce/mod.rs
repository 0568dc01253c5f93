//! Talking to Salesforce: which hosts may receive credentials, the OAuth client, and the
//! classification of every outcome.
//!
//! The reconciler only ever sees [`SfError`]'s three families: the access token is dead but
//! can be replaced, authorization is lost for a named reason (only this may make an org
//! Expired), or Salesforce could not answer (never Expired, retried with backoff).

pub mod allowlist;
pub mod classify;
pub mod client;

use std::fmt;

use crate::secret::SecretString;

pub use client::{HttpSalesforce, HttpSettings};

/// What Salesforce returns from its token endpoint, for every grant.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: SecretString,
    /// Present on first authorization, and on refresh only when rotation is on.
    pub refresh_token: Option<SecretString>,
    /// The API host to use from now on.
    pub instance_url: String,
    /// The identity URL, `https://login.salesforce.com/id/<orgId>/<userId>`.
    pub id: String,
    /// Milliseconds since the epoch, as Salesforce sends it (a string).
    pub issued_at: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("instance_url", &self.instance_url)
            .field("id", &self.id)
            .field("issued_at", &self.issued_at)
            .field("rotated", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenResponse {
    /// The org id and user id from the identity URL.
    pub fn org_and_user(&self) -> Option<(String, String)> {
        parse_identity_url(&self.id)
    }
}

/// Splits `https://host/id/<orgId>/<userId>` into its ids.
pub fn parse_identity_url(id: &str) -> Option<(String, String)> {
    let url = url::Url::parse(id).ok()?;
    let mut parts = url.path_segments()?;
    if parts.next()? != "id" {
        return None;
    }
    let org = parts.next()?.to_owned();
    let user = parts.next()?.to_owned();
    (org.starts_with("00D") && user.starts_with("005")).then_some((org, user))
}

/// Who a valid access token belongs to (from `userinfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The org id (18 characters).
    pub org_id: String,
    /// The user id (18 characters).
    pub user_id: String,
    /// The username, for example `backup@acme.com`.
    pub username: String,
}

/// The client credentials of a Connected App or External Client App.
#[derive(Clone, Debug)]
pub struct AppCredentials {
    /// The consumer key.
    pub client_id: String,
    /// The consumer secret, when the app is confidential.
    pub client_secret: Option<SecretString>,
}

/// Why authorization is lost for good: a person (or an admin) has to act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// `invalid_grant` / `expired access/refresh token`: expired by policy, revoked, or a
    /// rotated-out token reused.
    RefreshTokenRevoked,
    /// The user was deactivated.
    UserInactive,
    /// The user is locked out.
    UserLocked,
    /// The Connected App is not installed in the org (External Client Apps are not installed
    /// this way: a local one lives in its org, a packaged one arrives with its package).
    ConnectedAppNotInstalled,
    /// An admin blocked the app.
    ConnectedAppBlocked,
    /// The consumer key is unknown to Salesforce (app deleted, or not propagated yet).
    InvalidClientId,
    /// The consumer secret is wrong (for example after a secret rotation).
    InvalidClientSecret,
    /// The user is not approved or pre-authorized for the app.
    UserNotApproved,
    /// The login is refused from this network.
    IpRestricted,
    /// The JWT audience does not match the login host (production vs sandbox).
    InvalidAudience,
    /// The client credentials flow has no run-as user.
    NoClientCredentialsUser,
    /// A refresh without a consumer secret was refused: the app has "Require secret for
    /// Refresh Token Flow" on, and the spec names no secret.
    RefreshSecretRequired,
    /// A code exchange without a consumer secret was refused: the app has "Require secret
    /// for Web Server Flow" on, and the spec names no secret.
    WebServerSecretRequired,
    /// Salesforce refused for another documented reason.
    Refused,
}

/// Why Salesforce could not answer: try again later, never Expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransientReason {
    /// HTTP 5xx.
    ServerError,
    /// An HTML page (maintenance) where JSON was expected.
    MaintenancePage,
    /// Timed out.
    Timeout,
    /// Connection refused, reset, TLS or DNS failure.
    Connection,
    /// `token request is already being processed`: another refresh of this token is running.
    ConcurrentRefresh,
    /// `REQUEST_LIMIT_EXCEEDED` or HTTP 429.
    RateLimited,
    /// A response we could not understand.
    UnexpectedResponse,
    /// A JWT assertion refused as expired although it was fresh by this machine's clock: the
    /// clocks disagree. A person logging in would not fix it.
    ClockSkew,
}

/// Every outcome of a Salesforce call that is not success.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SfError {
    /// The access token is dead; a refresh or a new mint may fix it.
    #[error("the access token is no longer accepted by Salesforce")]
    AccessTokenInvalid,
    /// Authorization is lost: only this makes an org Expired.
    #[error("Salesforce refused the authorization ({reason:?}): {description}")]
    AuthorizationLost {
        /// Why.
        reason: LostReason,
        /// Salesforce's own `error_description` (never contains a token).
        description: String,
    },
    /// Salesforce could not answer.
    #[error("Salesforce is unavailable ({reason:?}): {detail}")]
    Transient {
        /// Why.
        reason: TransientReason,
        /// A short, token-free detail.
        detail: String,
    },
    /// The host is not allowed to receive credentials; nothing was sent.
    #[error("{0}")]
    HostNotAllowed(#[from] allowlist::HostError),
    /// The signing key for the JWT bearer flow is unusable.
    #[error("the JWT bearer private key is not a usable PEM RSA key: {0}")]
    BadPrivateKey(String),
    /// `request not supported on this domain`: the grant works only on the org's My Domain
    /// (client credentials at login.salesforce.com, or at an instance host). A spec fix,
    /// nothing lost.
    #[error("Salesforce answered {description:?}: this grant works only on the org's My Domain")]
    NotMyDomain {
        /// Salesforce's own `error_description`.
        description: String,
    },
}

/// The operations the operator needs from Salesforce. Behind a trait so the reconciler can be
/// driven without a network in unit tests.
pub trait Salesforce: Send + Sync + 'static {
    /// Validates an access token and says whose it is (`GET {instance}/services/oauth2/userinfo`).
    fn userinfo(
        &self,
        instance_url: &str,
        access_token: &SecretString,
    ) -> impl Future<Output = Result<Identity, SfError>> + Send;

    /// `grant_type=refresh_token`.
    fn refresh(
        &self,
        login_url: &str,
        app: &AppCredentials,
        refresh_token: &SecretString,
    ) -> impl Future<Output = Result<TokenResponse, SfError>> + Send;

    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256 assertion.
    fn jwt_bearer(
        &self,
        login_url: &str,
        client_id: &str,
        username: &str,
        private_key_pem: &SecretString,
    ) -> impl Future<Output = Result<TokenResponse, SfError>> + Send;

    /// `grant_type=client_credentials` (My Domain only).
    fn client_credentials(
        &self,
        login_url: &str,
        app: &AppCredentials,
    ) -> impl Future<Output = Result<TokenResponse, SfError>> + Send;

    /// `grant_type=authorization_code` with the PKCE verifier.
    fn exchange_code(
        &self,
        login_url: &str,
        app: &AppCredentials,
        code: &SecretString,
        pkce_verifier: &SecretString,
        redirect_uri: &str,
    ) -> impl Future<Output = Result<TokenResponse, SfError>> + Send;

    /// Revokes a token (`POST {login}/services/oauth2/revoke`).
    fn revoke(
        &self,
        login_url: &str,
        token: &SecretString,
    ) -> impl Future<Output = Result<(), SfError>> + Send;
}
