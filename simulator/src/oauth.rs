//! HTTP handlers for `/services/oauth2/token`, `introspect`, `revoke` and the OpenID
//! discovery document. They parse the wire format and hand over to `grants`.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::control::Shared;
use crate::error::oauth_errors;
use crate::faults::{ClockOffset, ProcessingDelay};
use crate::grants::{
    ClientCredentials, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_REFRESH_TOKEN, Params,
};
use crate::host::SfHost;

const NO_STORE: [(header::HeaderName, &str); 2] = [
    (
        header::CACHE_CONTROL,
        "no-cache,must-revalidate,max-age=0,no-store,private",
    ),
    (header::PRAGMA, "no-cache"),
];

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `POST /services/oauth2/token`.
pub(crate) async fn token(
    State(shared): State<Shared>,
    delay: Option<Extension<ProcessingDelay>>,
    clock: Option<Extension<ClockOffset>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let host = SfHost::from_request(&headers, &uri);
    let params = Params::parse(&body);
    let creds = ClientCredentials::from_request(&params, authorization(&headers));
    let grant_type = params.get("grant_type").unwrap_or("(none)").to_string();
    // Two requests with the same refresh token at once: the second one is refused.
    let refresh_token = params
        .get("refresh_token")
        .filter(|_| grant_type == GRANT_REFRESH_TOKEN);
    let _in_flight = match refresh_token {
        Some(refresh_token) => match shared.begin_processing(refresh_token) {
            Some(guard) => Some(guard),
            None => {
                tracing::info!(host = host.name(), "concurrent refresh refused");
                return oauth_errors::ALREADY_PROCESSING.into_response();
            }
        },
        None => None,
    };
    if let Some(Extension(ProcessingDelay(delay))) = delay {
        tokio::time::sleep(delay).await;
    }
    let clock_offset = clock.map_or(0, |Extension(ClockOffset(secs))| secs);
    let result = shared
        .state()
        .token_request(&host, &params, &creds, clock_offset);
    match result {
        Ok(response) => {
            tracing::info!(host = host.name(), grant_type, "token issued");
            (StatusCode::OK, NO_STORE, Json(response)).into_response()
        }
        Err(error) => {
            tracing::info!(
                host = host.name(),
                grant_type,
                error = error.error,
                description = error.description,
                "token request refused"
            );
            error.into_response()
        }
    }
}

/// `POST /services/oauth2/introspect`.
pub(crate) async fn introspect(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let creds = ClientCredentials::from_request(&params, authorization(&headers));
    let result = shared.state().introspect(&params, &creds);
    match result {
        Ok(body) => (StatusCode::OK, NO_STORE, Json(body)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /services/oauth2/revoke` (form) and `GET /services/oauth2/revoke?token=`.
pub(crate) async fn revoke(State(shared): State<Shared>, uri: Uri, body: Bytes) -> Response {
    let mut params = Params::parse(&body);
    if !params.has("token") {
        params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    }
    let result = shared.state().revoke(&params);
    match result {
        Ok(()) => {
            tracing::info!("token revoked");
            (StatusCode::OK, NO_STORE).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn well_known(headers: HeaderMap, uri: Uri) -> Response {
    let host = SfHost::from_request(&headers, &uri);
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(host.name())
        .to_string();
    let base = host.base_url(&raw);
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/services/oauth2/authorize"),
        "token_endpoint": format!("{base}/services/oauth2/token"),
        "revocation_endpoint": format!("{base}/services/oauth2/revoke"),
        "userinfo_endpoint": format!("{base}/services/oauth2/userinfo"),
        "jwks_uri": format!("{base}/id/keys"),
        "introspection_endpoint": format!("{base}/services/oauth2/introspect"),
        "scopes_supported": ["id", "api", "web", "full", "chatter_api", "visualforce", "refresh_token", "openid", "profile", "email", "address", "phone", "offline_access", "custom_permissions", "wave_api", "eclair_api"],
        "response_types_supported": ["code", "token", "token id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "display_values_supported": ["page", "popup", "touch"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "grant_types_supported": ["authorization_code", GRANT_REFRESH_TOKEN, GRANT_JWT_BEARER, GRANT_CLIENT_CREDENTIALS],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["active", "address", "email", "email_verified", "family_name", "given_name", "is_app_installed", "language", "locale", "name", "nickname", "organization_id", "phone_number", "phone_number_verified", "photos", "picture", "preferred_username", "profile", "sub", "updated_at", "urls", "user_id", "user_type", "zoneinfo"]
    }))
    .into_response()
}
