//! Fault injection and call counting for the Salesforce-facing endpoints. Faults are
//! matched per request (by endpoint or globally), for the next N requests or until
//! cleared; counts are kept per endpoint and per grant type of `/token`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::control::Shared;
use crate::error::oauth_errors;
use crate::grants::Params;
use crate::pages;

/// Endpoints that can be counted and faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/services/oauth2/authorize` and its login / consent form posts.
    Authorize,
    Token,
    Userinfo,
    Introspect,
    Revoke,
    /// `/id/<org>/<user>`.
    Identity,
    /// `/.well-known/openid-configuration`.
    WellKnown,
    /// `/services/data/vXX.X/limits` (and anything else under `/services/data`).
    Limits,
    /// `/services/data/vXX.X/query`: the SOQL queries a backup runs.
    Query,
    /// Any other path.
    Other,
}

impl Endpoint {
    pub fn classify(path: &str) -> Endpoint {
        match path.trim_end_matches('/') {
            p if p.starts_with("/services/oauth2/authorize") => Endpoint::Authorize,
            "/services/oauth2/token" => Endpoint::Token,
            "/services/oauth2/userinfo" => Endpoint::Userinfo,
            "/services/oauth2/introspect" => Endpoint::Introspect,
            "/services/oauth2/revoke" => Endpoint::Revoke,
            p if p.starts_with("/id/") => Endpoint::Identity,
            p if p.starts_with("/.well-known/") => Endpoint::WellKnown,
            p if p.starts_with("/services/data") && p.ends_with("/query") => Endpoint::Query,
            p if p.starts_with("/services/data") => Endpoint::Limits,
            _ => Endpoint::Other,
        }
    }

    fn is_oauth(self) -> bool {
        matches!(
            self,
            Endpoint::Token | Endpoint::Introspect | Endpoint::Revoke | Endpoint::Userinfo
        )
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 (`{"error":"unknown_error",...}` on OAuth endpoints, an HTML page elsewhere).
    ServerError,
    /// HTTP 503 with Salesforce's HTML maintenance page.
    Maintenance,
    /// The request is handled normally after this delay.
    Delay { millis: u64 },
    /// The connection is dropped without a response.
    ConnectionReset,
    /// HTTP 400 `invalid_grant` / `token request is already being processed`.
    AlreadyProcessing,
    /// HTTP 403 `REQUEST_LIMIT_EXCEEDED`.
    RequestLimitExceeded,
    /// The endpoint's clock is this many seconds off the real time (ahead when positive): its
    /// `Date` header says so, and the token endpoint judges JWT assertions' `exp` by it.
    SkewedClock { seconds: i64 },
}

impl FaultKind {
    pub fn delay(by: Duration) -> Self {
        FaultKind::Delay {
            millis: u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// `None`: every endpoint.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// `None`: until cleared; `Some(n)`: the next n matching requests.
    #[serde(default)]
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on every endpoint, until cleared.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            endpoint: None,
            times: None,
        }
    }

    pub fn on(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// An active fault with its id and remaining count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    next_id: u64,
    active: Vec<ActiveFault>,
}

impl FaultTable {
    pub fn add(&mut self, fault: Fault) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if fault.times != Some(0) {
            self.active.push(ActiveFault { id, fault });
        }
        id
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.active.len();
        self.active.retain(|f| f.id != id);
        before != self.active.len()
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.active.clone()
    }

    /// Takes one use of the first fault matching this endpoint.
    fn take(&mut self, endpoint: Endpoint) -> Option<FaultKind> {
        let index = self
            .active
            .iter()
            .position(|f| f.fault.endpoint.is_none_or(|e| e == endpoint))?;
        let kind = self.active[index].fault.kind.clone();
        if let Some(left) = self.active[index].fault.times.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.active.remove(index);
            }
        }
        Some(kind)
    }
}

/// Calls received, counted before any fault is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub endpoints: BTreeMap<Endpoint, u64>,
    /// `/token` calls by `grant_type` (as sent; `(none)` when missing).
    pub grant_types: BTreeMap<String, u64>,
}

impl CallCounts {
    pub fn endpoint(&self, endpoint: Endpoint) -> u64 {
        self.endpoints.get(&endpoint).copied().unwrap_or(0)
    }

    pub fn grant_type(&self, grant_type: &str) -> u64 {
        self.grant_types.get(grant_type).copied().unwrap_or(0)
    }
}

/// Request extension: how long the token endpoint takes to process this request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessingDelay(pub Duration);

/// Request extension: how far the token endpoint's clock is off the real time, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockOffset(pub i64);

/// Response extension asking the connection layer to drop the socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

const BODY_LIMIT: usize = 1 << 20;

/// Counts the call, then applies the first matching fault, if any.
pub(crate) async fn middleware(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = Endpoint::classify(request.uri().path());
    let request = if endpoint == Endpoint::Token {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .unwrap_or_default();
        let grant_type = Params::parse(&bytes)
            .get("grant_type")
            .unwrap_or("(none)")
            .to_string();
        *shared.counts().grant_types.entry(grant_type).or_default() += 1;
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    *shared.counts().endpoints.entry(endpoint).or_default() += 1;

    let fault = shared.faults().take(endpoint);
    let Some(kind) = fault else {
        return next.run(request).await;
    };
    tracing::info!(?endpoint, ?kind, "injecting fault");
    match kind {
        FaultKind::Delay { millis } if endpoint == Endpoint::Token => {
            // The token handler sleeps while it holds the request "in process", so that
            // a concurrent refresh of the same token sees it (as Salesforce does).
            let mut request = request;
            request
                .extensions_mut()
                .insert(ProcessingDelay(Duration::from_millis(millis)));
            next.run(request).await
        }
        FaultKind::Delay { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(request).await
        }
        FaultKind::ServerError if endpoint.is_oauth() => oauth_errors::UNKNOWN_ERROR.into_response(),
        FaultKind::ServerError if matches!(endpoint, Endpoint::Limits | Endpoint::Query) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            r#"[{"errorCode":"UNKNOWN_EXCEPTION","message":"An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)"}]"#,
        )
            .into_response(),
        FaultKind::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, Html(pages::internal_error())).into_response(),
        FaultKind::Maintenance => (StatusCode::SERVICE_UNAVAILABLE, Html(pages::maintenance())).into_response(),
        FaultKind::ConnectionReset => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        FaultKind::SkewedClock { seconds } => {
            let mut request = request;
            request.extensions_mut().insert(ClockOffset(seconds));
            let mut response = next.run(request).await;
            let now = std::time::SystemTime::now();
            let skewed = if seconds >= 0 {
                now + Duration::from_secs(seconds.unsigned_abs())
            } else {
                now - Duration::from_secs(seconds.unsigned_abs())
            };
            if let Ok(value) = header::HeaderValue::from_str(&httpdate::fmt_http_date(skewed)) {
                response.headers_mut().insert(header::DATE, value);
            }
            response
        }
        FaultKind::AlreadyProcessing => oauth_errors::ALREADY_PROCESSING.into_response(),
        FaultKind::RequestLimitExceeded => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out() {
        let mut table = FaultTable::default();
        table.add(
            Fault::new(FaultKind::ServerError)
                .on(Endpoint::Token)
                .times(2),
        );
        assert_eq!(table.take(Endpoint::Userinfo), None);
        assert_eq!(table.take(Endpoint::Token), Some(FaultKind::ServerError));
        assert_eq!(table.take(Endpoint::Token), Some(FaultKind::ServerError));
        assert_eq!(table.take(Endpoint::Token), None);
        let id = table.add(Fault::new(FaultKind::Maintenance));
        assert_eq!(table.take(Endpoint::Limits), Some(FaultKind::Maintenance));
        assert_eq!(table.take(Endpoint::Limits), Some(FaultKind::Maintenance));
        assert!(table.remove(id));
        assert_eq!(table.take(Endpoint::Limits), None);
    }

    #[test]
    fn classifies_paths() {
        assert_eq!(
            Endpoint::classify("/services/oauth2/authorize/login"),
            Endpoint::Authorize
        );
        assert_eq!(
            Endpoint::classify("/services/oauth2/token"),
            Endpoint::Token
        );
        assert_eq!(
            Endpoint::classify("/services/data/v62.0/limits"),
            Endpoint::Limits
        );
        assert_eq!(
            Endpoint::classify("/services/data/v62.0/query"),
            Endpoint::Query
        );
        assert_eq!(Endpoint::classify("/id/00D/005"), Endpoint::Identity);
    }
}
