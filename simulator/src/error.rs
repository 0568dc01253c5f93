//! Error types: `SimError` for the control surface and start-up, `OAuthError` for the
//! Salesforce-shaped error bodies the OAuth endpoints return on the wire.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Failures of the simulator's own API (control surface, start-up, key handling).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown org: {0}")]
    UnknownOrg(String),
    #[error("unknown user: {0}")]
    UnknownUser(String),
    #[error("unknown connected app: {0}")]
    UnknownApp(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("refresh token not found or no longer valid")]
    UnknownRefreshToken,
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("jwt error: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// An OAuth error as Salesforce returns it: `{"error":"...","error_description":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: &'static str,
}

#[derive(Serialize)]
struct OAuthErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    pub const fn bad_request(error: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description,
        }
    }

    /// The JSON body exactly as Salesforce sends it.
    pub fn body(&self) -> String {
        serde_json::to_string(&OAuthErrorBody {
            error: self.error,
            error_description: self.description,
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/json;charset=UTF-8",
                ),
                (
                    axum::http::header::CACHE_CONTROL,
                    "no-cache,must-revalidate,max-age=0,no-store,private",
                ),
            ],
            self.body(),
        )
            .into_response()
    }
}

/// The error bodies used by the token, introspect and revoke endpoints.
///
/// Sources, per body: the `error` codes and the JWT bearer bodies follow Salesforce Help
/// "OAuth 2.0 Authorization Errors" (remoteaccess_oauth_flow_errors) and the project's
/// notes in `salesforce-oauth.md`; the descriptions marked "reported" there come from the
/// Salesforce CLI's sources and public reports. Both kinds of app (Connected App and
/// External Client App) share these endpoints and bodies. What External Client Apps add
/// has no documented body of its own, so the simulator reuses these, as assumed:
/// - a secret missing where "Require secret for Web Server Flow" / "for Refresh Token
///   Flow" demands one: [`INVALID_CLIENT_CREDENTIALS`] (the documented settings are in
///   "Security: Require Secret for Refresh Token Flow Control");
/// - a user outside the permission sets of "Admin approved users are pre-authorized"
///   ("Preauthorize User App Access Through External Client App Policies"):
///   [`INVALID_APP_ACCESS`] on refresh, [`NOT_APPROVED`] on a JWT bearer grant, and
///   `OAUTH_APP_ACCESS_DENIED` on the authorize redirect (reported);
/// - a revocation from the External Client Apps OAuth Usage page ("Manage External Client
///   App OAuth Usage") or a refresh token policy ("Limit the Idle Refresh Token TTL in
///   External Client Apps"): [`EXPIRED_TOKEN`].
pub mod oauth_errors {
    use super::OAuthError;

    pub const EXPIRED_TOKEN: OAuthError =
        OAuthError::bad_request("invalid_grant", "expired access/refresh token");
    pub const INACTIVE_USER: OAuthError = OAuthError::bad_request("invalid_grant", "inactive user");
    pub const AUTHENTICATION_FAILURE: OAuthError =
        OAuthError::bad_request("invalid_grant", "authentication failure");
    pub const ALREADY_PROCESSING: OAuthError =
        OAuthError::bad_request("invalid_grant", "token request is already being processed");
    pub const INVALID_CLIENT_ID: OAuthError =
        OAuthError::bad_request("invalid_client_id", "client identifier invalid");
    pub const INVALID_CLIENT_CREDENTIALS: OAuthError =
        OAuthError::bad_request("invalid_client", "invalid client credentials");
    pub const INVALID_APP_ACCESS: OAuthError = OAuthError::bad_request(
        "invalid_app_access",
        "user is not admin approved to access this app",
    );
    pub const APP_NOT_INSTALLED: OAuthError =
        OAuthError::bad_request("invalid_client", "app must be installed into org");
    pub const APP_BLOCKED: OAuthError =
        OAuthError::bad_request("OAUTH_APP_BLOCKED", "this app is blocked by admin");
    pub const INVALID_CODE: OAuthError =
        OAuthError::bad_request("invalid_grant", "invalid authorization code");
    pub const EXPIRED_CODE: OAuthError =
        OAuthError::bad_request("invalid_grant", "expired authorization code");
    pub const REDIRECT_MISMATCH: OAuthError = OAuthError::bad_request(
        "redirect_uri_mismatch",
        "redirect_uri must match configuration",
    );
    pub const WRONG_CODE_VERIFIER: OAuthError =
        OAuthError::bad_request("invalid_request", "invalid code verifier");
    pub const MISSING_CODE_VERIFIER: OAuthError =
        OAuthError::bad_request("invalid_grant", "invalid code verifier");
    pub const UNSUPPORTED_GRANT_TYPE: OAuthError =
        OAuthError::bad_request("unsupported_grant_type", "grant type not supported");
    pub const NOT_APPROVED: OAuthError =
        OAuthError::bad_request("invalid_grant", "user hasn't approved this consumer");
    pub const AUDIENCE_INVALID: OAuthError =
        OAuthError::bad_request("invalid_grant", "audience is invalid");
    pub const INVALID_ASSERTION: OAuthError =
        OAuthError::bad_request("invalid_grant", "invalid assertion");
    pub const NO_CLIENT_CREDENTIALS_USER: OAuthError =
        OAuthError::bad_request("invalid_grant", "no client credentials user enabled");
    pub const NOT_SUPPORTED_ON_DOMAIN: OAuthError =
        OAuthError::bad_request("invalid_grant", "request not supported on this domain");
    pub const INVALID_TOKEN: OAuthError = OAuthError::bad_request("invalid_token", "invalid token");
    pub const UNSUPPORTED_TOKEN_TYPE: OAuthError = OAuthError::bad_request(
        "unsupported_token_type",
        "this server does not support revocation of the presented token type",
    );
    pub const UNKNOWN_ERROR: OAuthError = OAuthError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        error: "unknown_error",
        description: "retry your request",
    };
}
