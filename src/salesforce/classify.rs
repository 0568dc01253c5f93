//! Turning what Salesforce answered (or failed to answer) into an [`SfError`].
//!
//! Everything here is pure: the client hands over the HTTP status, the content type and the
//! body bytes, or the transport error, and gets back a verdict. The one rule that matters
//! most: only a definite refusal from the token endpoint becomes
//! [`SfError::AuthorizationLost`]; outages, rate limits, HTML pages, concurrent refreshes and
//! anything we do not understand are [`SfError::Transient`], so a Salesforce incident can
//! never make an org look expired.
//!
//! Error descriptions are matched case-insensitively on short fragments rather than on the
//! whole wording, since several of them are only known from reports. Text kept in an
//! `SfError` is bounded and stripped of anything that looks like a token.

use serde_json::Value;

use super::{LostReason, SfError, TransientReason};

/// The most characters of Salesforce-provided text kept in an error.
pub const MAX_DETAIL_CHARS: usize = 200;

/// How much of a body is looked at for text: error bodies are small, HTML pages are not.
const MAX_SCANNED_BYTES: usize = 4096;

/// What a token-endpoint error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Lost(LostReason),
    Transient(TransientReason),
}

/// `error` codes with a fixed meaning, whatever the description says.
#[rustfmt::skip]
const BY_CODE: &[(&str, Verdict)] = &[
    ("invalid_client_id", Verdict::Lost(LostReason::InvalidClientId)),
    ("oauth_app_blocked", Verdict::Lost(LostReason::ConnectedAppBlocked)),
    ("invalid_app_access", Verdict::Lost(LostReason::UserNotApproved)),
    ("request_limit_exceeded", Verdict::Transient(TransientReason::RateLimited)),
    ("login_rate_exceeded", Verdict::Transient(TransientReason::RateLimited)),
];

/// Fragments of `error_description`, lower case, checked in order.
#[rustfmt::skip]
const BY_DESCRIPTION: &[(&str, Verdict)] = &[
    ("access/refresh token", Verdict::Lost(LostReason::RefreshTokenRevoked)),
    ("inactive user", Verdict::Lost(LostReason::UserInactive)),
    ("user is inactive", Verdict::Lost(LostReason::UserInactive)),
    ("user is locked", Verdict::Lost(LostReason::UserLocked)),
    ("locked out", Verdict::Lost(LostReason::UserLocked)),
    ("ip restrict", Verdict::Lost(LostReason::IpRestricted)),
    ("authentication failure", Verdict::Lost(LostReason::InvalidClientSecret)),
    ("invalid client credentials", Verdict::Lost(LostReason::InvalidClientSecret)),
    ("client identifier invalid", Verdict::Lost(LostReason::InvalidClientId)),
    ("must be installed", Verdict::Lost(LostReason::ConnectedAppNotInstalled)),
    ("app is blocked", Verdict::Lost(LostReason::ConnectedAppBlocked)),
    ("blocked by admin", Verdict::Lost(LostReason::ConnectedAppBlocked)),
    ("hasn't approved", Verdict::Lost(LostReason::UserNotApproved)),
    ("has not approved", Verdict::Lost(LostReason::UserNotApproved)),
    ("not admin approved", Verdict::Lost(LostReason::UserNotApproved)),
    ("not approved", Verdict::Lost(LostReason::UserNotApproved)),
    ("audience", Verdict::Lost(LostReason::InvalidAudience)),
    ("no client credentials user", Verdict::Lost(LostReason::NoClientCredentialsUser)),
];

/// `error` codes that are a definite refusal even with a description we do not know.
const REFUSING_CODES: &[&str] = &["invalid_grant", "invalid_client", "unauthorized_client"];

/// Which kind of resource answered a call made with an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `/services/data/...` (REST API).
    Rest,
    /// `/services/oauth2/userinfo`.
    Userinfo,
    /// The identity URL `/id/<orgId>/<userId>`.
    Identity,
}

/// A token-endpoint response: `Ok(())` when it is a success to parse, else what went wrong.
pub fn token_response(status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), SfError> {
    if let Some(error) = outage(status, content_type, body) {
        return Err(error);
    }
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(match error_fields(body) {
        Some((code, description)) => token_error(&code, &description),
        None => unexpected(&format!(
            "HTTP {status} from the token endpoint without an OAuth error"
        )),
    })
}

/// A token-endpoint error by its OAuth `error` code and `error_description`.
pub fn token_error(code: &str, description: &str) -> SfError {
    let code_lc = code.trim().to_ascii_lowercase();
    let description_lc = description.to_lowercase();
    // Checked before everything else: it comes as `invalid_grant` but only means "busy".
    if description_lc.contains("already being processed") {
        return transient(TransientReason::ConcurrentRefresh, &join(code, description));
    }
    if description_lc.contains("not supported on this domain") {
        // The login URL is not the org's My Domain: a configuration fix, not a lost
        // authorization, whatever the error code.
        return SfError::NotMyDomain {
            description: sanitize(description),
        };
    }
    if description_lc.contains("request_limit_exceeded")
        || description_lc.contains("login_rate_exceeded")
    {
        return transient(TransientReason::RateLimited, &join(code, description));
    }
    let verdict = BY_CODE
        .iter()
        .find(|(c, _)| *c == code_lc)
        .or_else(|| {
            BY_DESCRIPTION
                .iter()
                .find(|(fragment, _)| description_lc.contains(fragment))
        })
        .map(|(_, v)| *v)
        .or_else(|| {
            REFUSING_CODES
                .contains(&code_lc.as_str())
                .then_some(Verdict::Lost(LostReason::Refused))
        });
    match verdict {
        Some(Verdict::Lost(reason)) => lost(reason, code, description),
        Some(Verdict::Transient(reason)) => transient(reason, &join(code, description)),
        None => unexpected(&join(code, description)),
    }
}

/// The grants where an app's settings decide whether the consumer secret must be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFlow {
    /// `grant_type=refresh_token`: "Require secret for Refresh Token Flow".
    Refresh,
    /// `grant_type=authorization_code`: "Require secret for Web Server Flow".
    WebServer,
}

/// Refines a token-endpoint error by what was sent. Salesforce answers a missing secret as
/// it answers a wrong one (`invalid_client` / `invalid client credentials`); when no secret
/// was sent, the fix is not a new secret but either a `clientSecretRef` in the spec or
/// clearing the app's "Require secret for ... Flow" setting, so it gets its own reason.
pub fn refine_for_secret(error: SfError, secret_sent: bool, flow: SecretFlow) -> SfError {
    match error {
        SfError::AuthorizationLost {
            reason: LostReason::InvalidClientSecret,
            description,
        } if !secret_sent => SfError::AuthorizationLost {
            reason: match flow {
                SecretFlow::Refresh => LostReason::RefreshSecretRequired,
                SecretFlow::WebServer => LostReason::WebServerSecretRequired,
            },
            description,
        },
        other => other,
    }
}

/// What the authorize endpoint answered to a request that nobody logs in to (the first leg
/// of the web server flow, as `check-setup` sends it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeAnswer {
    /// A login page, or a redirect to one: the app accepts the request as sent.
    LoginPage,
    /// An OAuth error, on Salesforce's error page or on a redirect to the callback URL.
    Refused {
        /// The OAuth `error` code.
        error: String,
        /// Its `error_description` (sanitized and bounded).
        description: String,
    },
    /// Neither: HTTP status and what was seen.
    Unexpected(String),
}

/// Reads the authorize endpoint's answer: an error on a redirect's query (to the callback
/// URL, or to Salesforce's own error page), an error written on an HTML page
/// (`error=...&error_description=...`), or else a login page.
pub fn authorize_answer(
    status: u16,
    location: Option<&str>,
    body: &[u8],
) -> Result<AuthorizeAnswer, SfError> {
    if status == 429 {
        return Err(transient(
            TransientReason::RateLimited,
            "HTTP 429 Too Many Requests",
        ));
    }
    if status >= 500 {
        let title = html_title(body)
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        return Err(transient(
            TransientReason::ServerError,
            &format!("HTTP {status} from the authorize endpoint{title}"),
        ));
    }
    if (300..400).contains(&status) {
        let Some(location) = location else {
            return Ok(AuthorizeAnswer::Unexpected(format!(
                "HTTP {status} without a Location"
            )));
        };
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        return Ok(match get("error") {
            Some(error) => AuthorizeAnswer::Refused {
                error: sanitize(&error),
                description: sanitize(&get("error_description").unwrap_or_default()),
            },
            None => AuthorizeAnswer::LoginPage,
        });
    }
    let text = scanned_text(body).replace("&amp;", "&");
    if let Some(error) = page_value(&text, "error=") {
        let description = page_value(&text, "error_description=").unwrap_or_default();
        return Ok(AuthorizeAnswer::Refused {
            error: sanitize(&error),
            description: sanitize(&description),
        });
    }
    if (200..300).contains(&status) {
        return Ok(AuthorizeAnswer::LoginPage);
    }
    Ok(AuthorizeAnswer::Unexpected(format!(
        "HTTP {status}{}",
        html_title(body)
            .map(|t| format!(" ({t})"))
            .unwrap_or_default()
    )))
}

/// The form-encoded value after the first `key` on a page (which is not part of a longer
/// name), up to the next `&`, `<`, quote or whitespace.
fn page_value(text: &str, key: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find(key) {
        let at = from + i;
        let preceded = text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            let rest = &text[at + key.len()..];
            let end = rest
                .find(|c: char| matches!(c, '&' | '<' | '"' | '\'') || c.is_whitespace())
                .unwrap_or(rest.len());
            let raw = &rest[..end];
            let value: String = url::form_urlencoded::parse(format!("v={raw}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            return (!value.is_empty()).then_some(value);
        }
        from = at + key.len();
    }
    None
}

/// Whether a token endpoint answer to a JWT bearer grant says the assertion had expired
/// (`invalid_grant` / `expired authorization code`, Salesforce's wording for an old `exp`).
/// The operator signs every assertion just before sending it, so this means the clocks of the
/// operator's machine and Salesforce disagree, never that the authorization is lost.
pub fn expired_assertion(status: u16, body: &[u8]) -> bool {
    (400..500).contains(&status)
        && error_fields(body).is_some_and(|(code, description)| {
            code.eq_ignore_ascii_case("invalid_grant")
                && description
                    .to_lowercase()
                    .contains("expired authorization code")
        })
}

/// A response from a resource called with an access token (REST, userinfo, identity URL):
/// `Ok(())` when it is a success to parse.
pub fn resource_response(
    resource: Resource,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), SfError> {
    if let Some(error) = outage(status, content_type, body) {
        return Err(error);
    }
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = scanned_text(body);
    let fields = error_fields(body);
    let mentions = |needle: &str| {
        text.contains(needle)
            || fields
                .as_ref()
                .is_some_and(|(code, description)| code == needle || description.contains(needle))
    };
    if mentions("REQUEST_LIMIT_EXCEEDED") {
        return Err(transient(
            TransientReason::RateLimited,
            &format!("HTTP {status}: REQUEST_LIMIT_EXCEEDED (the org's API request limit)"),
        ));
    }
    let token_rejected = mentions("INVALID_SESSION_ID")
        || mentions("Bad_OAuth_Token")
        || mentions("Missing_OAuth_Token");
    // 401 is always "session invalid"; a 403 from userinfo is how it says the same.
    if status == 401 || (status == 403 && (token_rejected || resource == Resource::Userinfo)) {
        return Err(SfError::AccessTokenInvalid);
    }
    let what = match &fields {
        Some((code, description)) => join(code, description),
        None => text.trim().to_owned(),
    };
    Err(unexpected(&format!("HTTP {status}: {what}")))
}

/// A revocation response. `invalid_token` counts as success: the token is already dead,
/// which is what revoking it was meant to achieve.
pub fn revoke_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), SfError> {
    if let Some(error) = outage(status, content_type, body) {
        return Err(error);
    }
    if (200..300).contains(&status) {
        return Ok(());
    }
    match error_fields(body) {
        Some((code, _)) if code.eq_ignore_ascii_case("invalid_token") => Ok(()),
        Some((code, description)) => Err(unexpected(&format!(
            "revocation refused: {}",
            join(&code, &description)
        ))),
        None => Err(unexpected(&format!(
            "HTTP {status} from the revocation endpoint"
        ))),
    }
}

/// A request that got no HTTP response (or a broken one).
pub fn transport_error(error: &reqwest::Error) -> SfError {
    // reqwest's own message is mostly the URL; the causes say what happened.
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let host = error
        .url()
        .and_then(|u| u.host_str())
        .unwrap_or("Salesforce");
    let mut detail = format!("{what} ({host})");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.ends_with(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = cause.source();
    }
    let reason = if error.is_timeout() {
        TransientReason::Timeout
    } else if error.is_decode() || error.is_builder() {
        TransientReason::UnexpectedResponse
    } else {
        TransientReason::Connection
    };
    transient(reason, &detail)
}

/// A response body that was not what we expected (for example a success without
/// `instance_url`). `what` must not contain token values.
pub fn unexpected(what: &str) -> SfError {
    transient(TransientReason::UnexpectedResponse, what)
}

/// Bounds `text` to [`MAX_DETAIL_CHARS`], turns control characters into spaces and replaces
/// anything that looks like a token with `[redacted]`.
pub fn sanitize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len().min(MAX_SCANNED_BYTES));
    let mut run = String::new();
    for c in text.chars().take(MAX_SCANNED_BYTES) {
        if is_token_char(c) {
            run.push(c);
            continue;
        }
        flush_run(&mut cleaned, &mut run);
        cleaned.push(if c.is_control() { ' ' } else { c });
    }
    flush_run(&mut cleaned, &mut run);
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= MAX_DETAIL_CHARS {
        return cleaned.to_owned();
    }
    let mut bounded: String = cleaned.chars().take(MAX_DETAIL_CHARS - 1).collect();
    bounded.push('…');
    bounded
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '.' | '_' | '-' | '+' | '/' | '=')
}

/// Salesforce access tokens are `<orgId>!<base64ish>`; refresh tokens and other secrets are
/// long opaque runs. Either is replaced.
fn flush_run(out: &mut String, run: &mut String) {
    let looks_like_token = (run.len() >= 20 && run.contains('!')) || run.len() >= 64;
    if looks_like_token {
        out.push_str("[redacted]");
    } else {
        out.push_str(run);
    }
    run.clear();
}

fn lost(reason: LostReason, code: &str, description: &str) -> SfError {
    let description = if description.trim().is_empty() {
        code
    } else {
        description
    };
    SfError::AuthorizationLost {
        reason,
        description: sanitize(description),
    }
}

fn transient(reason: TransientReason, detail: &str) -> SfError {
    SfError::Transient {
        reason,
        detail: sanitize(detail),
    }
}

fn join(code: &str, description: &str) -> String {
    match (code.trim().is_empty(), description.trim().is_empty()) {
        (false, false) => format!("{code}: {description}"),
        (false, true) => code.to_owned(),
        (true, _) => description.to_owned(),
    }
}

/// Answers that say "Salesforce is not able to answer right now", for any endpoint: an HTML
/// page where JSON was expected (maintenance, whatever the status), 429, and 5xx.
fn outage(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<SfError> {
    if is_html(content_type, body) {
        let title = html_title(body)
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        return Some(transient(
            TransientReason::MaintenancePage,
            &format!("HTTP {status} with an HTML page instead of JSON{title}"),
        ));
    }
    if status == 429 {
        return Some(transient(
            TransientReason::RateLimited,
            "HTTP 429 Too Many Requests",
        ));
    }
    if status >= 500 {
        let what = error_fields(body)
            .map(|(code, description)| format!(": {}", join(&code, &description)))
            .unwrap_or_default();
        return Some(transient(
            TransientReason::ServerError,
            &format!("HTTP {status}{what}"),
        ));
    }
    None
}

fn is_html(content_type: Option<&str>, body: &[u8]) -> bool {
    let declared = content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("text/html") || ct.contains("application/xhtml")
    });
    declared || body.trim_ascii_start().starts_with(b"<")
}

fn html_title(body: &[u8]) -> Option<String> {
    let text = scanned_text(body);
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text.get(start..end)?.trim();
    (!title.is_empty()).then(|| title.to_owned())
}

/// The start of the body as text (lossy), for searching.
fn scanned_text(body: &[u8]) -> String {
    let end = body.len().min(MAX_SCANNED_BYTES);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// `(code, description)` from `{"error":..,"error_description":..}` (OAuth) or
/// `[{"errorCode":..,"message":..}]` (REST); `None` when the body is neither.
fn error_fields(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = match &value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| object.get(n).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let code = field(&["error", "errorCode"]);
    let description = field(&["error_description", "message"]);
    if code.is_none() && description.is_none() {
        return None;
    }
    Some((code.unwrap_or_default(), description.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json;charset=UTF-8");
    const HTML: Option<&str> = Some("text/html; charset=UTF-8");

    fn oauth(error: &str, description: &str) -> Vec<u8> {
        serde_json::json!({"error": error, "error_description": description})
            .to_string()
            .into_bytes()
    }

    fn reason_of(e: &SfError) -> String {
        match e {
            SfError::AccessTokenInvalid => "AccessTokenInvalid".into(),
            SfError::AuthorizationLost { reason, .. } => format!("Lost({reason:?})"),
            SfError::Transient { reason, .. } => format!("Transient({reason:?})"),
            SfError::NotMyDomain { .. } => "NotMyDomain".into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn token_endpoint_errors_table() {
        use LostReason as L;
        use TransientReason as T;
        let lost = |r: L| format!("Lost({r:?})");
        let tr = |r: T| format!("Transient({r:?})");
        let my_domain = || "NotMyDomain".to_owned();
        #[rustfmt::skip]
        let cases: Vec<(u16, &str, &str, String)> = vec![
            (400, "invalid_grant", "expired access/refresh token", lost(L::RefreshTokenRevoked)),
            (400, "invalid_grant", "Expired Access/Refresh Token", lost(L::RefreshTokenRevoked)),
            (400, "invalid_grant", "inactive user", lost(L::UserInactive)),
            (400, "invalid_grant", "user is locked", lost(L::UserLocked)),
            (400, "invalid_grant", "ip restricted", lost(L::IpRestricted)),
            (400, "invalid_grant", "IP Restricted or invalid login hours", lost(L::IpRestricted)),
            (400, "invalid_grant", "authentication failure", lost(L::InvalidClientSecret)),
            (400, "invalid_client", "invalid client credentials", lost(L::InvalidClientSecret)),
            (400, "invalid_client_id", "client identifier invalid", lost(L::InvalidClientId)),
            (400, "invalid_client_id", "", lost(L::InvalidClientId)),
            (400, "invalid_client", "client identifier invalid", lost(L::InvalidClientId)),
            (400, "invalid_client", "app must be installed into org", lost(L::ConnectedAppNotInstalled)),
            (400, "OAUTH_APP_BLOCKED", "this app is blocked by admin", lost(L::ConnectedAppBlocked)),
            (400, "oauth_app_blocked", "something new", lost(L::ConnectedAppBlocked)),
            (400, "invalid_app_access", "user is not admin approved to access this app", lost(L::UserNotApproved)),
            (400, "invalid_app_access", "", lost(L::UserNotApproved)),
            (400, "invalid_grant", "user hasn't approved this consumer", lost(L::UserNotApproved)),
            (400, "invalid_grant", "audience is invalid", lost(L::InvalidAudience)),
            (400, "invalid_grant", "no client credentials user enabled", lost(L::NoClientCredentialsUser)),
            (400, "invalid_grant", "token request is already being processed", tr(T::ConcurrentRefresh)),
            (400, "invalid_grant", "Token request is ALREADY being processed", tr(T::ConcurrentRefresh)),
            // Unknown descriptions: refused for good only under a refusing error code.
            (400, "invalid_grant", "something nobody has seen", lost(L::Refused)),
            (400, "invalid_grant", "expired authorization code", lost(L::Refused)),
            (400, "invalid_grant", "request not supported on this domain", my_domain()),
            (400, "invalid_grant", "Request NOT supported on this domain", my_domain()),
            (400, "unsupported_grant_type", "request not supported on this domain", my_domain()),
            (400, "invalid_client", "something new", lost(L::Refused)),
            (400, "unauthorized_client", "", lost(L::Refused)),
            (401, "invalid_grant", "something new", lost(L::Refused)),
            (400, "invalid_request", "invalid code verifier", tr(T::UnexpectedResponse)),
            (400, "unsupported_grant_type", "grant type not supported", tr(T::UnexpectedResponse)),
            (400, "some_new_error", "whatever", tr(T::UnexpectedResponse)),
            (400, "", "", tr(T::UnexpectedResponse)),
            (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", tr(T::RateLimited)),
            (400, "LOGIN_RATE_EXCEEDED", "", tr(T::RateLimited)),
            (500, "unknown_error", "retry your request", tr(T::ServerError)),
            (502, "invalid_grant", "expired access/refresh token", tr(T::ServerError)),
            (429, "", "", tr(T::RateLimited)),
        ];
        for (status, error, description, want) in cases {
            let got = token_response(status, JSON, &oauth(error, description)).unwrap_err();
            assert_eq!(reason_of(&got), want, "{status} {error} {description}");
        }
    }

    #[test]
    fn missing_secret_refusals_table() {
        use SecretFlow as F;
        let bad_secret = oauth("invalid_client", "invalid client credentials");
        let auth_failure = oauth("invalid_grant", "authentication failure");
        let revoked = oauth("invalid_grant", "expired access/refresh token");
        #[rustfmt::skip]
        let cases: &[(&[u8], bool, F, &str)] = &[
            // No secret sent, refused for its credentials: the app requires a secret.
            (&bad_secret, false, F::Refresh, "Lost(RefreshSecretRequired)"),
            (&bad_secret, false, F::WebServer, "Lost(WebServerSecretRequired)"),
            (&auth_failure, false, F::Refresh, "Lost(RefreshSecretRequired)"),
            // A secret was sent: it is wrong.
            (&bad_secret, true, F::Refresh, "Lost(InvalidClientSecret)"),
            (&bad_secret, true, F::WebServer, "Lost(InvalidClientSecret)"),
            // Other refusals keep their reason.
            (&revoked, false, F::Refresh, "Lost(RefreshTokenRevoked)"),
            (&revoked, true, F::Refresh, "Lost(RefreshTokenRevoked)"),
        ];
        for (body, sent, flow, want) in cases {
            let error = token_response(400, JSON, body).unwrap_err();
            let got = refine_for_secret(error, *sent, *flow);
            assert_eq!(reason_of(&got), *want, "{sent} {flow:?}");
        }
        let transient = token_response(503, JSON, b"").unwrap_err();
        assert_eq!(
            reason_of(&refine_for_secret(transient, false, F::Refresh)),
            "Transient(ServerError)"
        );
    }

    #[test]
    fn authorize_answers_table() {
        let page = |error: &str, description: &str| {
            format!(
                "<html><p id=\"oauth_error\">error={error}&amp;error_description={}</p></html>",
                description.replace(' ', "+")
            )
        };
        let refused = |e: &str, d: &str| AuthorizeAnswer::Refused {
            error: e.into(),
            description: d.into(),
        };
        type Case<'a> = (
            u16,
            Option<&'a str>,
            String,
            Result<AuthorizeAnswer, &'a str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (200, None, "<html><form id=\"login_form\"></form></html>".into(), Ok(AuthorizeAnswer::LoginPage)),
            (302, Some("https://login.salesforce.com/?startURL=%2Fsetup"), String::new(), Ok(AuthorizeAnswer::LoginPage)),
            (400, None, page("invalid_client_id", "client identifier invalid"), Ok(refused("invalid_client_id", "client identifier invalid"))),
            (400, None, page("redirect_uri_mismatch", "redirect_uri must match configuration"), Ok(refused("redirect_uri_mismatch", "redirect_uri must match configuration"))),
            (302, Some("https://op.example/oauth/callback?error=invalid_request&error_description=missing+required+code+challenge&state=s"), String::new(), Ok(refused("invalid_request", "missing required code challenge"))),
            (302, Some("https://login.salesforce.com/setup/secur/RemoteAccessErrorPage.apexp?error=OAUTH_APP_BLOCKED&error_description=this%20app%20is%20blocked%20by%20admin"), String::new(), Ok(refused("OAUTH_APP_BLOCKED", "this app is blocked by admin"))),
            (302, None, String::new(), Ok(AuthorizeAnswer::Unexpected("HTTP 302 without a Location".into()))),
            (404, None, "<html><title>Not Found</title></html>".into(), Ok(AuthorizeAnswer::Unexpected("HTTP 404 (Not Found)".into()))),
            (503, None, "<html><title>Maintenance</title></html>".into(), Err("Transient(ServerError)")),
            (429, None, String::new(), Err("Transient(RateLimited)")),
        ];
        for (status, location, body, want) in cases {
            let got = authorize_answer(status, location, body.as_bytes());
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{status} {location:?}"),
                (Err(e), Err(w)) => assert_eq!(reason_of(e), *w, "{status}"),
                _ => panic!("{status} {location:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn lost_keeps_salesforce_description() {
        let got = token_response(400, JSON, &oauth("invalid_grant", "inactive user")).unwrap_err();
        assert_eq!(
            got,
            SfError::AuthorizationLost {
                reason: LostReason::UserInactive,
                description: "inactive user".into()
            }
        );
        let got = token_response(400, JSON, &oauth("invalid_client_id", "")).unwrap_err();
        assert!(
            matches!(got, SfError::AuthorizationLost { description, .. } if description == "invalid_client_id")
        );
    }

    #[test]
    fn token_endpoint_non_json_table() {
        use TransientReason as T;
        #[rustfmt::skip]
        let cases: &[(u16, Option<&str>, &[u8], T)] = &[
            (503, HTML, b"<html><head><title>Maintenance</title></head></html>", T::MaintenancePage),
            (200, HTML, b"<!DOCTYPE html><html>down for maintenance</html>", T::MaintenancePage),
            (200, None, b"  <html>no content type</html>", T::MaintenancePage),
            (500, HTML, b"<html>internal error</html>", T::MaintenancePage),
            (400, Some("text/plain"), b"Bad Request", T::UnexpectedResponse),
            (400, JSON, b"{not json", T::UnexpectedResponse),
            (400, JSON, b"", T::UnexpectedResponse),
            (400, JSON, b"{\"other\":1}", T::UnexpectedResponse),
            (302, None, b"", T::UnexpectedResponse),
            (500, JSON, b"", T::ServerError),
            (503, Some("text/plain"), b"Service Unavailable", T::ServerError),
            (429, JSON, b"[]", T::RateLimited),
            (
                403,
                JSON,
                br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
                T::RateLimited,
            ),
        ];
        for (status, ct, body, want) in cases {
            match token_response(*status, *ct, body) {
                Err(SfError::Transient { reason, .. }) => {
                    assert_eq!(
                        reason,
                        *want,
                        "{status} {:?}",
                        String::from_utf8_lossy(body)
                    )
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn expired_assertions_are_recognised() {
        let expired = oauth("invalid_grant", "expired authorization code");
        assert!(expired_assertion(400, &expired));
        assert!(!expired_assertion(500, &expired));
        assert!(!expired_assertion(
            400,
            &oauth("invalid_grant", "invalid assertion")
        ));
        assert!(!expired_assertion(
            400,
            &oauth("invalid_client", "expired authorization code")
        ));
        assert!(!expired_assertion(
            400,
            b"<html>expired authorization code</html>"
        ));
    }

    #[test]
    fn token_success_passes() {
        assert_eq!(
            token_response(200, JSON, br#"{"access_token":"x"}"#),
            Ok(())
        );
    }

    #[test]
    fn html_detail_has_title_and_status() {
        let err =
            token_response(503, HTML, b"<HTML><TITLE>Down for Maintenance</TITLE>").unwrap_err();
        let SfError::Transient { detail, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            detail,
            "HTTP 503 with an HTML page instead of JSON (Down for Maintenance)"
        );
    }

    #[test]
    fn resource_responses_table() {
        use Resource::*;
        let invalid_session: &[u8] =
            br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        let limit: &[u8] = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let plain = Some("text/plain");
        type Case<'a> = (Resource, u16, Option<&'a str>, &'a [u8], &'a str);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (Rest, 200, JSON, b"{}", "ok"),
            (Rest, 401, JSON, invalid_session, "AccessTokenInvalid"),
            (Rest, 403, JSON, limit, "Transient(RateLimited)"),
            (Rest, 403, JSON, br#"[{"errorCode":"API_DISABLED_FOR_ORG","message":"API is not enabled"}]"#, "Transient(UnexpectedResponse)"),
            (Rest, 500, JSON, br#"[{"errorCode":"UNKNOWN_EXCEPTION","message":"oops"}]"#, "Transient(ServerError)"),
            (Rest, 503, HTML, b"<html/>", "Transient(MaintenancePage)"),
            (Rest, 429, None, b"", "Transient(RateLimited)"),
            (Userinfo, 200, JSON, b"{}", "ok"),
            (Userinfo, 403, plain, b"Bad_OAuth_Token", "AccessTokenInvalid"),
            (Userinfo, 403, None, b"", "AccessTokenInvalid"),
            (Userinfo, 401, JSON, invalid_session, "AccessTokenInvalid"),
            (Userinfo, 403, JSON, limit, "Transient(RateLimited)"),
            (Userinfo, 200, HTML, b"<html>maintenance</html>", "Transient(MaintenancePage)"),
            (Userinfo, 404, plain, b"Not Found", "Transient(UnexpectedResponse)"),
            (Identity, 403, plain, b"Bad_OAuth_Token", "AccessTokenInvalid"),
            (Identity, 403, plain, b"Missing_OAuth_Token", "AccessTokenInvalid"),
            (Identity, 403, plain, b"Bad_Id", "Transient(UnexpectedResponse)"),
        ];
        for (resource, status, ct, body, want) in cases {
            let got = match resource_response(*resource, *status, *ct, body) {
                Ok(()) => "ok".to_owned(),
                Err(e) => reason_of(&e),
            };
            assert_eq!(
                got,
                *want,
                "{resource:?} {status} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn revoke_responses_table() {
        let cases: &[(u16, Option<&str>, Vec<u8>, &str)] = &[
            (200, None, Vec::new(), "ok"),
            (400, JSON, oauth("invalid_token", "invalid token"), "ok"),
            (
                400,
                JSON,
                oauth("unsupported_token_type", "not supported"),
                "Transient(UnexpectedResponse)",
            ),
            (503, HTML, b"<html/>".to_vec(), "Transient(MaintenancePage)"),
            (
                500,
                JSON,
                oauth("unknown_error", "retry"),
                "Transient(ServerError)",
            ),
        ];
        for (status, ct, body, want) in cases {
            let got = match revoke_response(*status, *ct, body) {
                Ok(()) => "ok".to_owned(),
                Err(e) => reason_of(&e),
            };
            assert_eq!(got, *want, "{status}");
        }
    }

    #[test]
    fn sanitize_bounds_and_redacts() {
        let token = "00D5g000004XyZa!AQ4AQHx1yC0vNr2Xy.Zq_3kd7Jd9sLw0pQmXb8fGh2Kl";
        let refresh =
            "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJrqa2XGjR8SdR1ta4dMlUy7s4kLNG6RJqkCRmc.abcdefgh";
        let text = format!("bad token {token} and {refresh}\nend");
        let cleaned = sanitize(&text);
        assert_eq!(cleaned, "bad token [redacted] and [redacted] end");

        let long = "x ".repeat(500);
        let cleaned = sanitize(&long);
        assert_eq!(cleaned.chars().count(), MAX_DETAIL_CHARS);
        assert!(cleaned.ends_with('…'));

        // Ordinary words, ids and URLs stay.
        let normal =
            "user 005xx000001Sv6AAAS of org 00Dxx0000001gPLEAY at https://login.salesforce.com/id";
        assert_eq!(sanitize(normal), normal);
    }

    #[test]
    fn descriptions_in_errors_are_sanitized() {
        let description = format!(
            "inactive user 00D5g000004XyZa!AQ4AQHx1yC0vNr2XyZq {}",
            "y".repeat(400)
        );
        let err = token_response(400, JSON, &oauth("invalid_grant", &description)).unwrap_err();
        let SfError::AuthorizationLost {
            reason,
            description,
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(reason, LostReason::UserInactive);
        assert!(description.chars().count() <= MAX_DETAIL_CHARS);
        assert!(!description.contains('!'), "{description}");
    }
}
