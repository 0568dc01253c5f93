//! Endpoints that take an access token: `userinfo`, the identity URL and the REST
//! `limits` resource, each answering a dead token the way Salesforce does (403 or 401).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::control::Shared;
use crate::host::SfHost;
use crate::state::{AccessToken, SimState};

fn bearer(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            let (scheme, value) = h.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
                .then(|| value.trim().to_string())
        })
        .or_else(|| {
            crate::grants::Params::parse(uri.query().unwrap_or_default().as_bytes())
                .get("oauth_token")
                .map(str::to_string)
        })
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn invalid_session() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json;charset=UTF-8"),
            (header::WWW_AUTHENTICATE, "Token"),
        ],
        r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
    )
        .into_response()
}

/// The identity document shared by `userinfo` (OpenID claim names) and the `id` URL.
fn identity(state: &SimState, token: &AccessToken) -> Option<(Value, Value)> {
    let user = state.users.get(&token.user_id)?;
    let org = state.org(user.org)?;
    let id_url = state.identity_url(&user.id);
    let instance = org.instance_url();
    let version = "{version}";
    let urls = json!({
        "enterprise": format!("{instance}/services/Soap/c/{version}/{}", &org.id[..15]),
        "metadata": format!("{instance}/services/Soap/m/{version}/{}", &org.id[..15]),
        "partner": format!("{instance}/services/Soap/u/{version}/{}", &org.id[..15]),
        "rest": format!("{instance}/services/data/v{version}/"),
        "sobjects": format!("{instance}/services/data/v{version}/sobjects/"),
        "search": format!("{instance}/services/data/v{version}/search/"),
        "query": format!("{instance}/services/data/v{version}/query/"),
        "profile": format!("{instance}/{}", user.id),
        "custom_domain": instance,
    });
    let (given, family) = match user.name.split_once(' ') {
        Some((g, f)) => (g.to_string(), f.to_string()),
        None => (String::new(), user.name.clone()),
    };
    let updated = "2024-01-01T00:00:00Z";
    let userinfo = json!({
        "sub": id_url,
        "user_id": user.id,
        "organization_id": org.id,
        "preferred_username": user.username,
        "nickname": user.username.split('@').next().unwrap_or_default(),
        "name": user.name,
        "email": user.email,
        "email_verified": true,
        "given_name": given,
        "family_name": family,
        "zoneinfo": "Europe/Paris",
        "photos": {},
        "profile": format!("{instance}/{}", user.id),
        "picture": format!("{instance}/img/userprofile/default_profile_200_v2.png"),
        "address": {},
        "is_salesforce_integration_user": false,
        "urls": urls,
        "active": user.active,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 3_600_000,
        "updated_at": updated,
        "is_app_installed": true,
    });
    let id_doc = json!({
        "id": id_url,
        "asserted_user": true,
        "user_id": user.id,
        "organization_id": org.id,
        "username": user.username,
        "nick_name": user.username.split('@').next().unwrap_or_default(),
        "display_name": user.name,
        "email": user.email,
        "email_verified": true,
        "first_name": given,
        "last_name": family,
        "timezone": "Europe/Paris",
        "photos": {},
        "addr_street": null,
        "addr_city": null,
        "addr_state": null,
        "addr_country": null,
        "addr_zip": null,
        "mobile_phone": null,
        "mobile_phone_verified": false,
        "is_lightning_login_user": false,
        "status": { "created_date": null, "body": null },
        "urls": urls,
        "active": user.active,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 3_600_000,
        "last_modified_date": "2024-01-01T00:00:00.000+0000",
        "is_app_installed": true,
    });
    Some((userinfo, id_doc))
}

/// `GET|POST /services/oauth2/userinfo`: 200 JSON, or 403 for a missing or dead token.
pub(crate) async fn userinfo(
    State(shared): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(token) = bearer(&headers, &uri) else {
        return plain(StatusCode::FORBIDDEN, "Missing_OAuth_Token");
    };
    let mut state = shared.state();
    let body = state
        .use_access_token(&token)
        .and_then(|t| identity(&state, &t))
        .map(|(userinfo, _)| userinfo);
    match body {
        Some(body) => Json(body).into_response(),
        None => plain(StatusCode::FORBIDDEN, "Bad_OAuth_Token"),
    }
}

/// `GET|POST /id/<orgId>/<userId>`: 200 JSON, or 403 `Bad_OAuth_Token`.
pub(crate) async fn identity_url(
    State(shared): State<Shared>,
    Path((org_id, user_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(token) = bearer(&headers, &uri) else {
        return plain(StatusCode::FORBIDDEN, "Missing_OAuth_Token");
    };
    let mut state = shared.state();
    let Some(t) = state.use_access_token(&token) else {
        return plain(StatusCode::FORBIDDEN, "Bad_OAuth_Token");
    };
    let same_id = |a: &str, b: &str| a.len() >= 15 && b.len() >= 15 && a[..15] == b[..15];
    let user_ok = state
        .user_id(&user_id)
        .ok()
        .and_then(|id| state.users.get(&id).cloned())
        .is_some_and(|u| {
            state
                .org(u.org)
                .is_some_and(|o| same_id(&o.id, &org_id) && same_id(&o.id, &t.org_id))
        });
    if !user_ok {
        return plain(StatusCode::FORBIDDEN, "Bad_Id");
    }
    match identity(&state, &t) {
        Some((_, id_doc)) => Json(id_doc).into_response(),
        None => plain(StatusCode::FORBIDDEN, "Bad_OAuth_Token"),
    }
}

fn valid_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        })
}

/// A REST API version that does not exist: 404 as Salesforce answers it.
fn unknown_version() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
        ),
    )
        .into_response()
}

/// The access token of a REST API call and its org's label, when the token is alive and its
/// org is served on the host the call addressed (else Salesforce answers [`invalid_session`]).
fn rest_session(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Option<(AccessToken, String)> {
    let token = bearer(headers, uri)?;
    let host = SfHost::from_request(headers, uri);
    let mut state = shared.state();
    let org = state
        .access_tokens
        .get(&token)
        .and_then(|t| state.users.get(&t.user_id))
        .and_then(|u| state.org(u.org))
        .filter(|o| !matches!(host, SfHost::MyDomain(_)) || host.admits(o))
        .map(|o| o.label.clone());
    // A token refused for its host is not used (it does not extend the session).
    let org = org?;
    Some((state.use_access_token(&token)?, org))
}

/// `GET /services/data/vXX.X/limits`: 200 JSON, or 401 `INVALID_SESSION_ID`.
pub(crate) async fn limits(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !valid_version(&version) {
        return unknown_version();
    }
    if rest_session(&shared, &headers, &uri).is_none() {
        return invalid_session();
    }
    Json(json!({
        "DailyApiRequests": { "Max": 15000, "Remaining": 14998 },
        "DailyAsyncApexExecutions": { "Max": 250000, "Remaining": 250000 },
        "DailyBulkV2QueryJobs": { "Max": 10000, "Remaining": 10000 },
        "DataStorageMB": { "Max": 5, "Remaining": 5 },
        "FileStorageMB": { "Max": 20, "Remaining": 20 },
    }))
    .into_response()
}

/// `GET /services/data/vXX.X/query?q=SOQL`: what a backup job reads. Any query answers the
/// org's three sample Accounts (the simulator keeps no records); 400 `MALFORMED_QUERY`
/// without `q`, 401 `INVALID_SESSION_ID` for a dead token. Calls are counted as
/// [`crate::faults::Endpoint::Query`].
pub(crate) async fn query(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !valid_version(&version) {
        return unknown_version();
    }
    let Some((token, org)) = rest_session(&shared, &headers, &uri) else {
        return invalid_session();
    };
    let has_query = crate::grants::Params::parse(uri.query().unwrap_or_default().as_bytes())
        .get("q")
        .is_some_and(|q| !q.trim().is_empty());
    if !has_query {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!([{"errorCode": "MALFORMED_QUERY", "message": "A query string is required"}]),
            ),
        )
            .into_response();
    }
    let prefix = &token.org_id[..token.org_id.len().min(6)];
    let records: Vec<Value> = ["Edge Communications", "Burlington Textiles", "Pyramid Construction"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let id = format!("001{prefix}{i:09}");
            json!({
                "attributes": {"type": "Account", "url": format!("/services/data/{version}/sobjects/Account/{id}")},
                "Id": id,
                "Name": format!("{name} ({org})"),
            })
        })
        .collect();
    Json(json!({"totalSize": records.len(), "done": true, "records": records})).into_response()
}
