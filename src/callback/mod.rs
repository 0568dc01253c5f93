//! The re-auth HTTP endpoints: the link in `status.reauth.url` starts a Salesforce login, and
//! the OAuth callback stores the tokens it ends with.
//!
//! `GET {prefix}/reauth/{ns}/{name}?t=...` checks the signed link, makes a signed `state`
//! (org namespace, name, uid, a nonce, ten minutes), derives the PKCE verifier from the key
//! and the nonce, sets a cookie naming the nonce, and redirects the browser to the org's
//! authorize URL. `GET {prefix}/oauth/callback` checks the `state` (signature, expiry, the
//! browser's cookie, the org's uid, not used before), exchanges the code, asks Salesforce
//! whose token it is, refuses another org than the pinned one, and writes the tokens to the
//! token Secret. The controller's watch on that Secret then validates the org, makes it
//! Valid and resumes its CronJobs: the callback never writes status, the reconciler stays
//! its only writer.
//!
//! Nothing lives in memory between the two requests, so every replica can serve either: the
//! state carries the org, the verifier is recomputed, and single use is recorded in an
//! annotation on the token Secret, written together with the tokens under the Secret's
//! resourceVersion, so two replicas cannot both accept one state. The cookie binds the
//! callback to the browser that opened the link, so nobody can make a person's browser
//! complete a login that someone else started. A login Salesforce refuses (the person chose
//! Deny, the app is not installed or blocked) writes no token; the reason goes into an
//! annotation on the org, which the reconciler reports in the org's conditions. Codes,
//! tokens, states and verifiers are never logged.

pub mod key;
pub mod link;
pub mod pages;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use key::{DEFAULT_KEY_SECRET, KEY_SECRET_KEY, KeyError, load_or_create_key};
pub use link::{CALLBACK_PATH, DEFAULT_LINK_LIFETIME, Links, PublicUrlError};
pub use state::StateKey;

use crate::FIELD_MANAGER;
use crate::clock::Clock;
use crate::crd::{AuthFlow, SalesforceOrg, TokenState, WebServerAuth};
use crate::credentials;
use crate::messages;
use crate::pinning;
use crate::reasons::Reason;
pub use crate::reauth_record::{REAUTH_ERROR_ANNOTATION, USED_STATES_ANNOTATION};
use crate::reauth_record::{ReauthFailure, used_states};
use crate::salesforce::allowlist::HostAllowlist;
use crate::salesforce::client::{AuthorizeRequest, authorize_url_with};
use crate::salesforce::{
    AppCredentials, Identity, LostReason, Salesforce, SfError, TokenResponse, TransientReason,
    classify,
};
use crate::secret::SecretString;
use crate::token_store::{self, Origin, Stored, TokenWrite};
use pages::Page;
use state::{LinkClaims, Purpose, StateClaims, TokenError};

/// How long a person has between opening the link and coming back from Salesforce.
pub const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// The authorize request's prompt: a person logs in and approves, every time, so they see
/// which user and which app they connect.
const PROMPT: &str = "login consent";
const COOKIE_PREFIX: &str = "sforg_reauth_";

/// What the callback server needs. Every field is shared by all requests.
pub struct CallbackState<S> {
    /// The Kubernetes client.
    pub client: Client,
    /// The Salesforce client.
    pub salesforce: S,
    /// The public URL and signing key.
    pub links: Links,
    /// Hosts the browser may be sent to, and that may receive the code.
    pub allowlist: HostAllowlist,
    /// Revoke the refresh token that new tokens replace.
    pub revoke_superseded: bool,
    /// The clock states and links are checked with.
    pub clock: Clock,
}

/// The routes, under the public URL's path.
pub fn router<S: Salesforce>(state: CallbackState<S>) -> Router {
    let prefix = state.links.prefix().to_owned();
    Router::new()
        .route(&format!("{prefix}/reauth/{{ns}}/{{name}}"), get(start::<S>))
        .route(&format!("{prefix}{CALLBACK_PATH}"), get(callback::<S>))
        .fallback(not_found)
        .with_state(Arc::new(state))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The callback server's settings, as the `run` command takes them.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The base URL at which browsers reach the server.
    pub public_url: String,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The Secret holding the signing key: namespace (default: the client's, that is the
    /// pod's namespace in a cluster) and name.
    pub key_secret: (Option<String>, String),
    /// Revoke the refresh token that new tokens replace.
    pub revoke_superseded: bool,
}

/// Why the callback server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The public URL.
    #[error(transparent)]
    PublicUrl(#[from] PublicUrlError),
    /// The listen address.
    #[error(
        "cannot listen on {addr} for the re-auth callback: {source}; choose another --callback-listen"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
}

/// Loads (or creates) the signing key, binds the listener and serves the re-auth routes in
/// the background until `shutdown`; returns the links for the reconciler to write.
pub async fn spawn<S: Salesforce>(
    client: &Client,
    salesforce: S,
    allowlist: HostAllowlist,
    options: ServerOptions,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Links, StartError> {
    let (ns, name) = options.key_secret;
    let ns = ns.unwrap_or_else(|| client.default_namespace().to_owned());
    let key = load_or_create_key(client, &ns, &name).await?;
    let links = Links::new(&options.public_url, key, DEFAULT_LINK_LIFETIME)?;
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: options.listen,
                source,
            })?;
    let routes = router(CallbackState {
        client: client.clone(),
        salesforce,
        links: links.clone(),
        allowlist,
        revoke_superseded: options.revoke_superseded,
        clock,
    });
    info!(listen = %options.listen, callback = %links.callback_url(), "serving re-auth links");
    tokio::spawn(async move {
        if let Err(e) = serve(listener, routes, shutdown).await {
            tracing::error!(error = %e, "the re-auth callback server failed");
        }
    });
    Ok(links)
}

/// Why a re-auth request ends on an error page. The message says what to do.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(
        "This re-auth link is not valid ({0}). Open the current link from the org's status: kubectl get sforg {1} -o jsonpath='{{.status.reauth.url}}'"
    )]
    BadLink(TokenError, String),
    #[error(
        "This re-auth link has expired. The operator keeps a fresh one in the org's status: kubectl get sforg {0} -o jsonpath='{{.status.reauth.url}}'"
    )]
    LinkExpired(String),
    #[error("SalesforceOrg {0} does not exist (any more): nothing to log in for.")]
    OrgGone(String),
    #[error(
        "This login was started for an earlier SalesforceOrg {0}, since deleted and created again. Open the re-auth link in the current org's status."
    )]
    OrgReplaced(String),
    #[error(
        "SalesforceOrg {0} does not use the web server flow: the operator gets its tokens itself, no person logs in for it."
    )]
    Headless(String),
    #[error(
        "The state parameter is missing, so this login cannot be matched to a re-auth link. Open the re-auth link again."
    )]
    MissingState,
    #[error(
        "The state parameter is not valid ({0}): this login was not started by this operator, or was altered on the way. Open the re-auth link again."
    )]
    BadState(TokenError),
    #[error(
        "More than 10 minutes passed between opening the re-auth link and coming back from Salesforce. Open the re-auth link again."
    )]
    StateExpired,
    #[error(
        "This login was started in another browser (or this browser refused the operator's cookie), so it is not accepted here. Open the re-auth link again in this browser."
    )]
    NoCookie,
    #[error(
        "This login was already completed (a page reloaded or a callback address reused); nothing was changed. Check the org: kubectl get sforg {0}"
    )]
    Replayed(String),
    #[error("Salesforce sent no authorization code. Open the re-auth link again.")]
    MissingCode,
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    SalesforceRefused(String),
    #[error(
        "Salesforce did not accept the authorization code ({0}): it was already used or has expired. Open the re-auth link again."
    )]
    CodeRefused(String),
    #[error("{0}")]
    WrongOrg(String),
    #[error(
        "Salesforce could not be reached to finish the login ({0}). Nothing was changed; open the re-auth link again in a few minutes."
    )]
    Unavailable(String),
    #[error("The operator cannot finish this login: {0}")]
    Config(String),
    #[error(
        "The Kubernetes API failed ({0}). Nothing was changed; open the re-auth link again in a moment."
    )]
    Kube(#[from] kube::Error),
    #[error(
        "The new tokens could not be stored ({0}); they were revoked and nothing was changed. Open the re-auth link again in a moment."
    )]
    NotStored(String),
}

impl Refusal {
    fn page(&self) -> Page {
        let (status, outcome, title) = match self {
            Refusal::BadLink(..) => (StatusCode::BAD_REQUEST, "bad-link", "Invalid re-auth link"),
            Refusal::LinkExpired(_) => (StatusCode::GONE, "link-expired", "Re-auth link expired"),
            Refusal::OrgGone(_) => (StatusCode::NOT_FOUND, "org-gone", "Org not found"),
            Refusal::OrgReplaced(_) => (StatusCode::GONE, "org-replaced", "Org was replaced"),
            Refusal::Headless(_) => (StatusCode::BAD_REQUEST, "headless", "No login needed"),
            Refusal::MissingState => (
                StatusCode::BAD_REQUEST,
                "missing-state",
                "Login not recognized",
            ),
            Refusal::BadState(_) => (StatusCode::BAD_REQUEST, "bad-state", "Login not recognized"),
            Refusal::StateExpired => (
                StatusCode::BAD_REQUEST,
                "state-expired",
                "Login took too long",
            ),
            Refusal::NoCookie => (
                StatusCode::FORBIDDEN,
                "other-browser",
                "Login from another browser",
            ),
            Refusal::Replayed(_) => (StatusCode::CONFLICT, "replayed", "Login already completed"),
            Refusal::MissingCode => (
                StatusCode::BAD_REQUEST,
                "missing-code",
                "No authorization code",
            ),
            Refusal::Denied(_) => (StatusCode::FORBIDDEN, "denied", "Access denied"),
            Refusal::SalesforceRefused(_) => (
                StatusCode::FORBIDDEN,
                "salesforce-refused",
                "Salesforce refused the login",
            ),
            Refusal::CodeRefused(_) => {
                (StatusCode::BAD_REQUEST, "code-refused", "Code not accepted")
            }
            Refusal::WrongOrg(_) => (StatusCode::FORBIDDEN, "wrong-org", "Wrong Salesforce org"),
            Refusal::Unavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "salesforce-unavailable",
                "Salesforce unavailable",
            ),
            Refusal::Config(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "config",
                "Operator not configured",
            ),
            Refusal::Kube(_) | Refusal::NotStored(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "kubernetes",
                "Kubernetes unavailable",
            ),
        };
        Page {
            status,
            outcome,
            title: title.to_owned(),
            message: self.to_string(),
        }
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn cookie_name(nonce: &str) -> String {
    format!("{COOKIE_PREFIX}{nonce}")
}

fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(k, _)| k == name)
}

async fn not_found() -> Response {
    Page {
        status: StatusCode::NOT_FOUND,
        outcome: "not-found",
        title: "Not found".into(),
        message: "This address serves only re-auth links and the OAuth callback.".into(),
    }
    .into_response()
}

fn refused(refusal: Refusal, org: &str) -> Response {
    let page = refusal.page();
    warn!(
        org,
        outcome = page.outcome,
        status = page.status.as_u16(),
        "re-auth refused"
    );
    page.into_response()
}

/// The org a state or link names, checked: it exists, has that uid, and logs in with a person.
async fn org_for(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<(SalesforceOrg, WebServerAuth), Refusal> {
    let full = format!("{ns}/{name}");
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), ns);
    let org = api
        .get_opt(name)
        .await?
        .ok_or_else(|| Refusal::OrgGone(full.clone()))?;
    if org.uid().as_deref() != Some(uid) {
        return Err(Refusal::OrgReplaced(full));
    }
    match org.spec.auth.flow() {
        Ok(AuthFlow::WebServer(w)) => Ok((org, w)),
        _ => Err(Refusal::Headless(full)),
    }
}

/// `GET /reauth/{ns}/{name}?t=...`: checks the link, redirects to Salesforce.
async fn start<S: Salesforce>(
    State(app): State<Arc<CallbackState<S>>>,
    Path((ns, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let full = format!("{}/{}", shown_name(&ns), shown_name(&name));
    match begin(&app, &ns, &name, &uri).await {
        Ok(response) => response,
        Err(refusal) => refused(refusal, &full),
    }
}

/// A name from the request path, shown on a page only when it can be a Kubernetes name.
fn shown_name(name: &str) -> String {
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if plausible {
        name.to_owned()
    } else {
        "NAME".to_owned()
    }
}

async fn begin<S: Salesforce>(
    app: &CallbackState<S>,
    ns: &str,
    name: &str,
    uri: &Uri,
) -> Result<Response, Refusal> {
    let now = app.clock.unix_seconds();
    let token = query_param(uri, "t").unwrap_or_default();
    let claims: LinkClaims =
        state::verify(app.links.key(), Purpose::Link, &token, now).map_err(|e| match e {
            TokenError::Expired => Refusal::LinkExpired(shown_name(name)),
            e => Refusal::BadLink(e, shown_name(name)),
        })?;
    if claims.ns != ns || claims.name != name {
        return Err(Refusal::BadLink(TokenError::BadSignature, shown_name(name)));
    }
    let (org, web) = org_for(&app.client, ns, name, &claims.uid).await?;
    let nonce = state::new_nonce();
    let state_claims = StateClaims {
        ns: ns.to_owned(),
        name: name.to_owned(),
        uid: claims.uid,
        nonce: nonce.clone(),
        exp: now + STATE_LIFETIME.as_secs() as i64,
    };
    let signed = state::sign(app.links.key(), Purpose::State, &state_claims);
    let verifier = state::pkce_verifier(app.links.key(), &nonce);
    let scopes: Vec<&str> = web.scopes.iter().map(String::as_str).collect();
    let hint = org.status.as_ref().and_then(|s| s.username.as_deref());
    let callback_url = app.links.callback_url();
    let request = AuthorizeRequest {
        login_url: org.spec.login_url.trim_end_matches('/'),
        client_id: &web.client_id,
        redirect_uri: &callback_url,
        scopes: &scopes,
        state: &signed,
        login_hint: hint,
        prompt: Some(PROMPT),
    };
    let location = authorize_url_with(&app.allowlist, &request, &verifier)
        .map_err(|e| Refusal::Config(format!("spec.loginUrl: {e}")))?;
    let cookie = format!(
        "{}=1; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{}",
        cookie_name(&nonce),
        app.links.callback_path(),
        STATE_LIFETIME.as_secs(),
        if app.links.secure() { "; Secure" } else { "" }
    );
    info!(org = %format!("{ns}/{name}"), "re-auth started");
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
    )
        .into_response())
}

/// `GET /oauth/callback?code&state` or `?error&error_description&state`.
async fn callback<S: Salesforce>(
    State(app): State<Arc<CallbackState<S>>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match finish(&app, &headers, &uri).await {
        Ok(page) => page.into_response(),
        Err((refusal, org)) => refused(refusal, &org),
    }
}

/// A callback whose state checked out: the org it is for and its token Secret as read.
struct Checked {
    claims: StateClaims,
    org: SalesforceOrg,
    web: WebServerAuth,
    secrets: Api<Secret>,
    current: Option<Secret>,
    /// The Secret's resourceVersion ("" without one).
    version: String,
    /// `namespace/name`, for pages and logs.
    full: String,
}

/// Checks the state: signature, expiry, this browser's cookie, the org and its uid, and
/// that it was not used before.
async fn check_state<S: Salesforce>(
    app: &CallbackState<S>,
    headers: &HeaderMap,
    uri: &Uri,
    now: i64,
) -> Result<Checked, (Refusal, String)> {
    let unknown = || "-".to_owned();
    let token = query_param(uri, "state").ok_or((Refusal::MissingState, unknown()))?;
    let claims: StateClaims =
        state::verify(app.links.key(), Purpose::State, &token, now).map_err(|e| match e {
            TokenError::Expired => (Refusal::StateExpired, unknown()),
            e => (Refusal::BadState(e), unknown()),
        })?;
    let full = format!("{}/{}", claims.ns, claims.name);
    let fail = |r: Refusal| (r, full.clone());
    if !has_cookie(headers, &cookie_name(&claims.nonce)) {
        return Err(fail(Refusal::NoCookie));
    }
    let (org, web) = org_for(&app.client, &claims.ns, &claims.name, &claims.uid)
        .await
        .map_err(fail)?;
    let secrets: Api<Secret> = Api::namespaced(app.client.clone(), &claims.ns);
    let current = secrets
        .get_opt(&org.spec.token_secret_ref.name)
        .await
        .map_err(|e| fail(e.into()))?;
    let annotations = current
        .as_ref()
        .map(|s| s.annotations().clone())
        .unwrap_or_default();
    if used_states(&annotations, now)
        .iter()
        .any(|(n, _)| *n == claims.nonce)
    {
        return Err(fail(Refusal::Replayed(claims.name.clone())));
    }
    let version = current
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default();
    Ok(Checked {
        claims,
        org,
        web,
        secrets,
        current,
        version,
        full,
    })
}

/// The org id the org is pinned to, or a placeholder for messages.
fn org_label(org: &SalesforceOrg) -> String {
    org.status
        .as_ref()
        .and_then(|s| s.org_id.clone())
        .unwrap_or_else(|| "the org".into())
}

/// An error redirect from Salesforce: recorded on the org, explained on the page.
async fn salesforce_error<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    error: &str,
    uri: &Uri,
) -> Refusal {
    let description =
        classify::sanitize(&query_param(uri, "error_description").unwrap_or_default());
    let failure = callback_failure(error, &description, c.version.clone());
    let message = messages::failed_login(failure.reason, &failure.description, &org_label(&c.org))
        .map(|(_, m)| m)
        .unwrap_or_else(|| failure.description.clone());
    record_failure(&app.client, &c.org, &failure).await;
    if failure.reason == Reason::AuthorizationDenied {
        Refusal::Denied(message)
    } else {
        Refusal::SalesforceRefused(message)
    }
}

/// Exchanges the code and checks whose tokens they are: only the pinned org's are kept.
async fn exchange<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    creds: &AppCredentials,
    code: &SecretString,
) -> Result<(TokenResponse, Identity), Refusal> {
    let login = c.org.spec.login_url.trim_end_matches('/');
    let verifier = state::pkce_verifier(app.links.key(), &c.claims.nonce);
    let callback_url = app.links.callback_url();
    let tokens = match app
        .salesforce
        .exchange_code(login, creds, code, &verifier, &callback_url)
        .await
    {
        Ok(t) => t,
        Err(e) => return Err(exchange_refusal(app, c, e).await),
    };
    let identity = match app
        .salesforce
        .userinfo(&tokens.instance_url, &tokens.access_token)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            discard(app, login, &tokens).await;
            return Err(Refusal::Unavailable(e.to_string()));
        }
    };
    let seen = c.org.status.as_ref().and_then(|s| s.org_id.as_deref());
    let expected = c.org.spec.expected_org_id.as_deref();
    if let Err(wrong) = pinning::check(expected, seen, &identity.org_id) {
        discard(app, login, &tokens).await;
        return Err(Refusal::WrongOrg(messages::wrong_org_login(
            &identity.username,
            &wrong.got,
            &c.full,
            &wrong.want,
        )));
    }
    Ok((tokens, identity))
}

async fn finish<S: Salesforce>(
    app: &CallbackState<S>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Page, (Refusal, String)> {
    let now = app.clock.unix_seconds();
    let c = check_state(app, headers, uri, now).await?;
    let fail = |r: Refusal| (r, c.full.clone());
    if let Some(error) = query_param(uri, "error") {
        return Err(fail(salesforce_error(app, &c, &error, uri).await));
    }
    let code = query_param(uri, "code")
        .filter(|code| !code.is_empty())
        .map(SecretString::new)
        .ok_or_else(|| fail(Refusal::MissingCode))?;
    let creds = credentials::web_server(&c.secrets, &c.web)
        .await
        .map_err(|e| fail(Refusal::Config(e.to_string())))?
        .map_err(|m| fail(Refusal::Config(m.message)))?;
    let (tokens, identity) = exchange(app, &c, &creds, &code).await.map_err(fail)?;
    let superseded = store(app, &c, &creds, &tokens, now).await.map_err(fail)?;
    let full = &c.full;
    info!(org = %full, org_id = %identity.org_id, username = %identity.username, "re-authorized: new tokens stored");
    if c.org.annotations().contains_key(REAUTH_ERROR_ANNOTATION) {
        clear_failure(&app.client, &c.org).await;
    }
    if app.revoke_superseded
        && let Some(old) = superseded
        && tokens.refresh_token.as_ref() != Some(&old)
    {
        let login = c.org.spec.login_url.trim_end_matches('/');
        match app.salesforce.revoke(login, &old).await {
            Ok(()) => info!(org = %full, "revoked the superseded refresh token"),
            Err(e) => {
                warn!(org = %full, error = %e, "could not revoke the superseded refresh token")
            }
        }
    }
    Ok(Page {
        status: StatusCode::OK,
        outcome: "token-valid",
        title: "Token valid".into(),
        message: format!(
            "Token valid for {} as {}. SalesforceOrg {full} is being checked now and its backups \
             resume once it is Valid; you can close this page.",
            identity.org_id, identity.username
        ),
    })
}

/// The failure to record for an error redirect from Salesforce.
fn callback_failure(error: &str, description: &str, tokens: String) -> ReauthFailure {
    let reason = if error.eq_ignore_ascii_case("access_denied") {
        Reason::AuthorizationDenied
    } else {
        match classify::token_error(error, description) {
            SfError::AuthorizationLost { reason, .. } if reason != LostReason::Refused => {
                Reason::from(reason)
            }
            _ => Reason::AuthorizationFailed,
        }
    };
    let description = if description.is_empty() {
        classify::sanitize(error)
    } else {
        description.to_owned()
    };
    ReauthFailure {
        reason,
        description,
        tokens,
    }
}

/// What a failed code exchange tells the person, recording causes an admin must fix.
async fn exchange_refusal<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    error: SfError,
) -> Refusal {
    match error {
        SfError::AuthorizationLost {
            reason: LostReason::Refused | LostReason::RefreshTokenRevoked,
            description,
        } => Refusal::CodeRefused(description),
        SfError::AuthorizationLost {
            reason,
            description,
        } => {
            let failure = ReauthFailure {
                reason: Reason::from(reason),
                description,
                tokens: c.version.clone(),
            };
            record_failure(&app.client, &c.org, &failure).await;
            let message =
                messages::failed_login(failure.reason, &failure.description, &org_label(&c.org))
                    .map(|(_, m)| m)
                    .unwrap_or_default();
            Refusal::SalesforceRefused(message)
        }
        SfError::HostNotAllowed(e) => Refusal::Config(format!("spec.loginUrl: {e}")),
        // An OAuth error we cannot name (a verifier that does not match, for one): the code
        // is no good.
        SfError::Transient {
            reason: TransientReason::UnexpectedResponse,
            detail,
        } => Refusal::CodeRefused(detail),
        other => Refusal::Unavailable(other.to_string()),
    }
}

/// Revokes tokens that will not be stored.
async fn discard<S: Salesforce>(app: &CallbackState<S>, login: &str, tokens: &TokenResponse) {
    let token = tokens
        .refresh_token
        .as_ref()
        .unwrap_or(&tokens.access_token);
    if let Err(e) = app.salesforce.revoke(login, token).await {
        warn!(error = %e, "could not revoke tokens that were not stored");
    }
}

/// Writes the tokens and marks the state used, in one write under the Secret's
/// resourceVersion. Returns the refresh token the new tokens replace. Tokens that are not
/// stored are revoked.
async fn store<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    creds: &AppCredentials,
    tokens: &TokenResponse,
    now: i64,
) -> Result<Option<SecretString>, Refusal> {
    let write = TokenWrite {
        response: tokens,
        client_id: &creds.client_id,
        client_secret: creds.client_secret.as_ref(),
        origin: Origin::Login {
            nonce: &c.claims.nonce,
            expires: c.claims.exp,
            now,
        },
        allowlist: &app.allowlist,
    };
    let refusal = match token_store::store(&c.secrets, &c.org, c.current.clone(), &write).await {
        Stored::Written { replaced, .. } => return Ok(replaced),
        // Another replica, or a reloaded page, finished this very login first.
        Stored::Superseded => Refusal::Replayed(c.claims.name.clone()),
        Stored::NotOwned => Refusal::Config(messages::token_secret_not_owned(
            &c.org.spec.token_secret_ref.name,
            &c.org.name_any(),
        )),
        Stored::HostNotAllowed(e) => Refusal::Config(format!("instance_url: {e}")),
        Stored::Failed(error) => Refusal::NotStored(error),
    };
    let login = c.org.spec.login_url.trim_end_matches('/');
    discard(app, login, tokens).await;
    Err(refusal)
}

/// Records a failure for the reconciler to report, unless the org is Valid (a deliberate
/// re-login that failed changes nothing about it).
async fn record_failure(client: &Client, org: &SalesforceOrg, failure: &ReauthFailure) {
    if org.status.as_ref().and_then(|s| s.state) == Some(TokenState::Valid) {
        return;
    }
    patch_annotation(client, org, serde_json::Value::String(failure.encode())).await;
}

async fn clear_failure(client: &Client, org: &SalesforceOrg) {
    patch_annotation(client, org, serde_json::Value::Null).await;
}

async fn patch_annotation(client: &Client, org: &SalesforceOrg, value: serde_json::Value) {
    let ns = org.namespace().unwrap_or_default();
    let api: Api<SalesforceOrg> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"metadata": {"annotations": {REAUTH_ERROR_ANNOTATION: value}}});
    if let Err(e) = api
        .patch(
            &org.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(org = %org.name_any(), namespace = %ns, error = %e, "could not record the re-auth outcome on the org");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_errors_become_reasons() {
        let cases = [
            (
                "access_denied",
                "end-user denied authorization",
                Reason::AuthorizationDenied,
            ),
            (
                "invalid_client",
                "app must be installed into org",
                Reason::ConnectedAppNotInstalled,
            ),
            (
                "OAUTH_APP_BLOCKED",
                "this app is blocked by admin",
                Reason::ConnectedAppBlocked,
            ),
            (
                "OAUTH_APP_ACCESS_DENIED",
                "user is not admin approved to access this app",
                Reason::UserNotApproved,
            ),
            (
                "invalid_scope",
                "the requested scope is not allowed",
                Reason::AuthorizationFailed,
            ),
            ("invalid_client", "", Reason::AuthorizationFailed),
        ];
        for (error, description, want) in cases {
            let f = callback_failure(error, description, "7".into());
            assert_eq!(f.reason, want, "{error}");
            assert_eq!(f.tokens, "7");
            assert!(
                messages::failed_login(f.reason, &f.description, "00D").is_some(),
                "{error}"
            );
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; sforg_reauth_abc=1".parse().unwrap());
        assert!(has_cookie(&headers, "sforg_reauth_abc"));
        assert!(!has_cookie(&headers, "sforg_reauth_ab"));
        assert!(!has_cookie(&HeaderMap::new(), "sforg_reauth_abc"));
    }
}
