//! The authorization endpoint (web server flow): request checks, the login form, the
//! consent page, and the redirect back with a code or an error. Errors that Salesforce
//! shows as a page (bad client id, redirect URI mismatch) are pages here too.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use crate::control::Shared;
use crate::grants::Params;
use crate::host::SfHost;
use crate::ids;
use crate::pages;
use crate::spec::PermittedUsers;
use crate::state::{AuthCode, LoginTicket, SimState, TICKET_LIFETIME, ms};

/// The parameters of an authorization request, carried through the pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthorizeRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    login_hint: Option<String>,
}

impl AuthorizeRequest {
    fn from_params(p: &Params) -> Self {
        let get = |n: &str| p.get(n).map(str::to_string);
        Self {
            response_type: get("response_type"),
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            scope: get("scope"),
            state: get("state"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            prompt: get("prompt"),
            login_hint: get("login_hint"),
        }
    }

    fn hidden(&self) -> Vec<(&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("prompt", &self.prompt),
            ("login_hint", &self.login_hint),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_deref().map(|v| (n, v)))
        .collect()
    }

    fn prompts(&self, what: &str) -> bool {
        self.prompt
            .as_deref()
            .is_some_and(|p| p.split_whitespace().any(|x| x == what))
    }
}

/// Where an authorization step ends.
#[derive(Debug)]
enum Outcome {
    /// Error shown as a page (no redirect): bad client id or redirect URI.
    Page(&'static str, &'static str),
    /// 302 to the app's redirect URI.
    Redirect(String),
    /// Show the login form (again), with an optional message.
    Login(Option<&'static str>),
    /// Show the consent page with this ticket.
    Consent {
        ticket: String,
        app_name: String,
        username: String,
        scopes: Vec<String>,
    },
}

const LOGIN_ERROR: &str = "Please check your username and password. If you still can't log in, contact your Salesforce administrator.";

fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{sep}{query}")
}

fn error_redirect(req: &AuthorizeRequest, error: &str, description: &str) -> Outcome {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = req.state.as_deref() {
        pairs.push(("state", state));
    }
    Outcome::Redirect(redirect_with(
        req.redirect_uri.as_deref().unwrap_or_default(),
        &pairs,
    ))
}

impl SimState {
    /// Checks that do not depend on who logs in.
    fn check_authorize(&self, req: &AuthorizeRequest) -> Result<(), Outcome> {
        let app = req
            .client_id
            .as_deref()
            .and_then(|id| self.apps.get(id))
            .ok_or(Outcome::Page(
                "invalid_client_id",
                "client identifier invalid",
            ))?;
        let redirect = req
            .redirect_uri
            .as_deref()
            .filter(|r| app.redirect_uris.iter().any(|u| u == r))
            .is_some();
        if !redirect {
            return Err(Outcome::Page(
                "redirect_uri_mismatch",
                "redirect_uri must match configuration",
            ));
        }
        if req.response_type.as_deref() != Some("code") {
            return Err(error_redirect(
                req,
                "unsupported_response_type",
                "response type not supported",
            ));
        }
        match (&req.code_challenge, req.code_challenge_method.as_deref()) {
            (Some(_), None | Some("S256")) => {}
            (Some(_), Some(_)) => {
                return Err(error_redirect(
                    req,
                    "invalid_request",
                    "invalid code challenge method",
                ));
            }
            // "Require Proof Key for Code Exchange (PKCE) extension for Supported
            // Authorization Flows" (an ECA setting, on by default; Salesforce Help "Security:
            // Require Proof Key for Code Exchange (PKCE)"). The wording of the refusal is
            // assumed (reported, not in Salesforce's documentation).
            (None, _) if app.require_pkce => {
                return Err(error_redirect(
                    req,
                    "invalid_request",
                    "missing required code challenge",
                ));
            }
            (None, _) => {}
        }
        if let Some(scope) = &req.scope
            && !scope
                .split_whitespace()
                .all(|s| app.scopes.iter().any(|a| a == s))
        {
            return Err(error_redirect(
                req,
                "invalid_scope",
                "the requested scope is not allowed",
            ));
        }
        if app.blocked {
            return Err(error_redirect(
                req,
                "OAUTH_APP_BLOCKED",
                "this app is blocked by admin",
            ));
        }
        Ok(())
    }

    fn granted_scope(&self, req: &AuthorizeRequest) -> String {
        match req.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
            None => req
                .client_id
                .as_deref()
                .and_then(|id| self.apps.get(id))
                .map(|a| a.scopes.join(" "))
                .unwrap_or_default(),
        }
    }

    fn issue_code(&mut self, req: &AuthorizeRequest, user_id: &str) -> Outcome {
        let code = ids::authorization_code();
        let now = self.now();
        self.codes.insert(
            code.clone(),
            AuthCode {
                client_id: req.client_id.clone().unwrap_or_default(),
                user_id: user_id.to_string(),
                redirect_uri: req.redirect_uri.clone().unwrap_or_default(),
                scope: self.granted_scope(req),
                code_challenge: req.code_challenge.clone(),
                issued_at: now,
            },
        );
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = req.state.as_deref() {
            pairs.push(("state", state));
        }
        Outcome::Redirect(redirect_with(
            req.redirect_uri.as_deref().unwrap_or_default(),
            &pairs,
        ))
    }

    fn login(
        &mut self,
        host: &SfHost,
        req: &AuthorizeRequest,
        username: &str,
        password: &str,
    ) -> Outcome {
        self.sweep();
        if let Err(outcome) = self.check_authorize(req) {
            return outcome;
        }
        let Some(user) = self.user_by_username(username).cloned() else {
            return Outcome::Login(Some(LOGIN_ERROR));
        };
        let admitted = self.org(user.org).is_some_and(|o| host.admits(o));
        if !admitted || !user.active || user.password != password {
            return Outcome::Login(Some(LOGIN_ERROR));
        }
        let Some(app) = req
            .client_id
            .as_deref()
            .and_then(|id| self.apps.get(id))
            .cloned()
        else {
            return Outcome::Page("invalid_client_id", "client identifier invalid");
        };
        if app.blocked_as_uninstalled(&user) {
            return error_redirect(req, "invalid_client", "app must be installed into org");
        }
        let pre_authorized = app.pre_authorizes(&user);
        if app.permitted_users == PermittedUsers::AdminApprovedPreAuthorized {
            if !pre_authorized {
                return error_redirect(
                    req,
                    "OAUTH_APP_ACCESS_DENIED",
                    "user is not admin approved to access this app",
                );
            }
            return self.issue_code(req, &user.id);
        }
        let consented = self
            .consents
            .contains(&(user.id.clone(), app.client_id.clone()));
        if consented && !req.prompts("consent") {
            return self.issue_code(req, &user.id);
        }
        let ticket = ids::opaque(40);
        let now = self.now();
        self.tickets.insert(
            ticket.clone(),
            LoginTicket {
                user_id: user.id.clone(),
                client_id: app.client_id.clone(),
                issued_at: now,
            },
        );
        Outcome::Consent {
            ticket,
            app_name: app.name.clone(),
            username: user.username.clone(),
            scopes: self
                .granted_scope(req)
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    fn decide(&mut self, req: &AuthorizeRequest, ticket: &str, allow: bool) -> Outcome {
        if let Err(outcome) = self.check_authorize(req) {
            return outcome;
        }
        let now = self.now();
        let Some(t) = self.tickets.remove(ticket) else {
            return Outcome::Login(Some("Your session has expired. Please log in again."));
        };
        if Some(t.client_id.as_str()) != req.client_id.as_deref()
            || now >= t.issued_at.saturating_add(ms(TICKET_LIFETIME))
        {
            return Outcome::Login(Some("Your session has expired. Please log in again."));
        }
        if !allow {
            return error_redirect(req, "access_denied", "end-user denied authorization");
        }
        self.consents
            .insert((t.user_id.clone(), t.client_id.clone()));
        self.issue_code(req, &t.user_id)
    }
}

fn render(outcome: Outcome, req: &AuthorizeRequest) -> Response {
    let no_store = [(header::CACHE_CONTROL, "no-cache, no-store")];
    match outcome {
        Outcome::Page(error, description) => (
            StatusCode::BAD_REQUEST,
            no_store,
            Html(pages::error(error, description)),
        )
            .into_response(),
        Outcome::Redirect(location) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location.as_str()),
                (header::CACHE_CONTROL, "no-cache, no-store"),
            ],
        )
            .into_response(),
        Outcome::Login(message) => {
            let username = req.login_hint.clone().unwrap_or_default();
            (
                StatusCode::OK,
                no_store,
                Html(pages::login(&req.hidden(), &username, message)),
            )
                .into_response()
        }
        Outcome::Consent {
            ticket,
            app_name,
            username,
            scopes,
        } => {
            let mut hidden = req.hidden();
            hidden.push(("ticket", ticket.as_str()));
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            (
                StatusCode::OK,
                no_store,
                Html(pages::consent(&hidden, &app_name, &username, &scopes)),
            )
                .into_response()
        }
    }
}

/// `GET /services/oauth2/authorize`.
pub(crate) async fn authorize_get(State(shared): State<Shared>, uri: Uri) -> Response {
    let params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    let req = AuthorizeRequest::from_params(&params);
    let outcome = {
        let state = shared.state();
        state
            .check_authorize(&req)
            .err()
            .unwrap_or(Outcome::Login(None))
    };
    render(outcome, &req)
}

/// `POST /services/oauth2/authorize` and `POST /services/oauth2/authorize/login`.
pub(crate) async fn authorize_login(
    State(shared): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let host = SfHost::from_request(&headers, &uri);
    let mut params = Params::parse(&body);
    if !params.has("client_id") {
        params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    }
    let req = AuthorizeRequest::from_params(&params);
    let username = params.get("username").unwrap_or_default().to_string();
    let password = params
        .get("pw")
        .or_else(|| params.get("password"))
        .unwrap_or_default()
        .to_string();
    let outcome = {
        let mut state = shared.state();
        if username.is_empty() {
            state
                .check_authorize(&req)
                .err()
                .unwrap_or(Outcome::Login(None))
        } else {
            state.login(&host, &req, &username, &password)
        }
    };
    let req = AuthorizeRequest {
        login_hint: Some(username)
            .filter(|u| !u.is_empty())
            .or(req.login_hint.clone()),
        ..req
    };
    render(outcome, &req)
}

/// `POST /services/oauth2/authorize/consent`.
pub(crate) async fn authorize_consent(State(shared): State<Shared>, body: Bytes) -> Response {
    let params = Params::parse(&body);
    let req = AuthorizeRequest::from_params(&params);
    let ticket = params.get("ticket").unwrap_or_default().to_string();
    let allow = params.has("allow") && !params.has("deny");
    let deny = params.has("deny");
    let outcome = {
        let mut state = shared.state();
        if !allow && !deny {
            Outcome::Login(Some("Choose Allow or Deny."))
        } else {
            state.decide(&req, &ticket, allow)
        }
    };
    render(outcome, &req)
}
