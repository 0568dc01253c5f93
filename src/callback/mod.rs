//! The re-auth HTTP endpoints: the link in `status.reauth.url` starts a Salesforce login, and
//! the OAuth callback stores the tokens it ends with.
//!
//! `GET {prefix}/reauth/{ns}/{name}?t=...` checks the signed link and shows a confirmation
//! page: which org (namespace/name, expected org id, login host, the user it is connected
//! as) and a button. A GET changes nothing, so a mail scanner or crawler opening the link
//! starts nothing. The button posts the link with a CSRF token (bound to a cookie of this
//! browser) to the same address, which makes a signed `state` (org namespace, name, uid, the
//! link, a nonce, ten minutes), derives the PKCE verifier from the key and the nonce, sets a
//! cookie with a random value whose hash the state carries, and redirects the browser to the
//! org's authorize URL. `GET {prefix}/oauth/callback` checks the `state` (signature, expiry,
//! the browser's cookie, the org's uid, not used before, its link still good), exchanges the
//! code, asks Salesforce whose token it is, refuses another org than the pinned one, and
//! writes the tokens to the token Secret. The controller's watch on that Secret then
//! validates the org, makes it Valid and resumes its CronJobs: the callback never writes
//! status, the reconciler stays its only writer.
//!
//! A link works only while its org waits for a person (Pending or Expired) or its
//! authorization expires soon (`TokenExpiringSoon`), for the uid and
//! generation it was issued for, and once: the login that succeeds through it records its id
//! on the token Secret. A login as another Salesforce user than the org was connected as
//! stores nothing until the person confirms on a page that says so (see `another_user`),
//! and is then recorded in an Event. Who authorized and when go on the token Secret, in the
//! write that stores the tokens.
//!
//! Nothing lives in memory between the requests, so every replica can serve any of them: the
//! state carries the org, the verifier is recomputed, and single use is recorded in
//! annotations on the token Secret, written together with the tokens under the Secret's
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
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cookie::{Cookie, SameSite};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use key::{
    DEFAULT_KEY_SECRET, KEY_SECRET_KEY, KeyError, PREVIOUS_KEY_SECRET_KEY, load_or_create_key,
};
pub use link::{CALLBACK_PATH, CONFIRM_USER_PATH, DEFAULT_LINK_LIFETIME, Links, PublicUrlError};
pub use state::{SigningKeys, StateKey};

use crate::FIELD_MANAGER;
use crate::clock::Clock;
use crate::crd::{AuthFlow, SalesforceOrg, TokenState, WebServerAuth};
use crate::credentials;
use crate::events::Recorder;
use crate::http_server::Limits;
use crate::messages;
use crate::pinning;
use crate::reasons::Reason;
pub use crate::reauth_record::{
    AUTHORIZED_AT_ANNOTATION, AUTHORIZED_BY_ANNOTATION, REAUTH_ERROR_ANNOTATION,
    USED_LINKS_ANNOTATION, USED_STATES_ANNOTATION,
};
use crate::reauth_record::{ReauthFailure, used_entries, used_states};
use crate::salesforce::allowlist::HostAllowlist;
use crate::salesforce::client::{AuthorizeRequest, authorize_url_with};
use crate::salesforce::{
    AppCredentials, Identity, LostReason, Salesforce, SfError, TokenResponse, TransientReason,
    classify,
};
use crate::secret::SecretString;
use crate::token_store::{self, Origin, Stored, TokenWrite};
use pages::{FormPage, Page};
use state::{ConfirmUserClaims, CsrfClaims, LinkClaims, LinkRef, Purpose, StateClaims, TokenError};

/// Event reason when an org is connected as another Salesforce user than before.
pub const AUTHORIZED_USER_CHANGED: &str = "AuthorizedUserChanged";
/// The reason of the Event of every successful login through a re-auth link.
pub const REAUTHORIZED: &str = "Reauthorized";
/// How long a person has between opening the link and coming back from Salesforce.
pub const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// The authorize request's prompt: a person logs in and approves, every time, so they see
/// which user and which app they connect.
const PROMPT: &str = "login consent";
/// The browser-binding cookie of a login is this followed by the state's nonce (and prefixed
/// `__Host-` with an https public URL).
const COOKIE_PREFIX: &str = "sforg_reauth_";
/// The confirmation page's CSRF cookie (prefixed alike).
const CSRF_COOKIE: &str = "sforg_csrf";
/// How long the confirmation page's form works.
const CSRF_LIFETIME: Duration = Duration::from_secs(3600);
/// Largest form body accepted (the forms carry two tokens).
const MAX_FORM_BYTES: usize = 16 * 1024;

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
    /// The clock links, states and forms are checked with.
    pub clock: Clock,
}

/// The routes, under the public URL's path.
pub fn router<S: Salesforce>(state: CallbackState<S>) -> Router {
    let prefix = state.links.prefix().to_owned();
    Router::new()
        .route(
            &format!("{prefix}/reauth/{{ns}}/{{name}}"),
            get(show::<S>).post(start::<S>),
        )
        .route(&format!("{prefix}{CALLBACK_PATH}"), get(callback::<S>))
        .route(
            &format!("{prefix}{CONFIRM_USER_PATH}"),
            post(confirm_user::<S>),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(Arc::new(state))
}

/// Serves `router` on `listener` until `shutdown` resolves, with the limits of
/// [`crate::http_server`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http_server::serve(listener, router, Limits::DEFAULT, shutdown).await;
    Ok(())
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
    // A thread and runtime of its own: a flood on the public callback never delays the
    // controller.
    crate::http_server::spawn_isolated(
        "callback-server",
        listener,
        routes,
        Limits::DEFAULT,
        shutdown,
    )
    .map_err(|source| StartError::Listen {
        addr: options.listen,
        source,
    })?;
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
    #[error(
        "A login through this re-auth link already succeeded; a link works once. If the org needs a person again, open the link now in its status: kubectl get sforg {0} -o jsonpath='{{.status.reauth.url}}'"
    )]
    LinkUsed(String),
    #[error(
        "SalesforceOrg {0} was changed (its spec edited) since this link was issued, so the link no longer works. Open the current one: kubectl get sforg {0} -o jsonpath='{{.status.reauth.url}}'"
    )]
    LinkOutdated(String),
    #[error(
        "SalesforceOrg {0} does not need a login: it is connected (or being checked), and its re-auth links work only while it waits for a person or its authorization expires soon. Nothing was changed. To connect it again deliberately, revoke its token in Salesforce (Setup, Connected Apps OAuth Usage) and ask for a check (sforg-operator check {0}): it turns Expired with a new link."
    )]
    NotNeeded(String),
    #[error(
        "This form was not sent from the operator's page in this browser, or the page is more than an hour old. Nothing was changed; open the re-auth link again."
    )]
    Csrf,
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
            Refusal::LinkUsed(_) => (StatusCode::GONE, "link-used", "Re-auth link already used"),
            Refusal::LinkOutdated(_) => {
                (StatusCode::GONE, "link-outdated", "Re-auth link outdated")
            }
            Refusal::NotNeeded(_) => (StatusCode::CONFLICT, "not-needed", "No login needed"),
            Refusal::Csrf => (StatusCode::FORBIDDEN, "csrf", "Form not accepted"),
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

/// `GET /reauth/{ns}/{name}?t=...`: checks the link and shows what it is for, with a button
/// that posts to start the login. A GET changes nothing, so a mail scanner or a crawler that
/// opens the link starts no login and spends nothing.
async fn show<S: Salesforce>(
    State(app): State<Arc<CallbackState<S>>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let full = format!("{}/{}", shown_name(&ns), shown_name(&name));
    let token = query_param(&uri, "t").unwrap_or_default();
    match confirm_page(&app, &ns, &name, &token, &headers).await {
        Ok(response) => response,
        Err(refusal) => refused(refusal, &full),
    }
}

/// `POST /reauth/{ns}/{name}` with `t` and `csrf`: checks the link again and the CSRF token,
/// and redirects to Salesforce.
async fn start<S: Salesforce>(
    State(app): State<Arc<CallbackState<S>>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full = format!("{}/{}", shown_name(&ns), shown_name(&name));
    match begin(&app, &ns, &name, &headers, &body).await {
        Ok(response) => response,
        Err(refusal) => refused(refusal, &full),
    }
}

/// `POST /reauth-confirm-user` with `confirm`: a person accepts connecting the org as
/// another Salesforce user than before; the login starts again for that user.
async fn confirm_user<S: Salesforce>(
    State(app): State<Arc<CallbackState<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match accept_user(&app, &headers, &body).await {
        Ok(response) => response,
        Err((refusal, org)) => refused(refusal, &org),
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

fn form_param(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A link that checked out, and the org it is for.
struct LinkChecked {
    claims: LinkClaims,
    org: SalesforceOrg,
    web: WebServerAuth,
    secret: Option<Secret>,
}

/// Checks a link: signature (current or previous key), expiry, the org (same uid), that the
/// org still needs a person for the spec the link was issued for, and that no login through
/// it succeeded yet.
async fn check_link<S: Salesforce>(
    app: &CallbackState<S>,
    ns: &str,
    name: &str,
    token: &str,
    now: i64,
) -> Result<LinkChecked, Refusal> {
    let claims: LinkClaims =
        state::verify(app.links.keys(), Purpose::Link, token, now).map_err(|e| match e {
            TokenError::Expired => Refusal::LinkExpired(shown_name(name)),
            e => Refusal::BadLink(e, shown_name(name)),
        })?;
    if claims.ns != ns || claims.name != name {
        return Err(Refusal::BadLink(TokenError::BadSignature, shown_name(name)));
    }
    let (org, web) = org_for(&app.client, ns, name, &claims.uid).await?;
    still_needed(&org, claims.generation)?;
    let secrets: Api<Secret> = Api::namespaced(app.client.clone(), ns);
    let secret = secrets.get_opt(&org.spec.token_secret_ref.name).await?;
    if link_used(secret.as_ref(), &claims.id, now) {
        return Err(Refusal::LinkUsed(name.to_owned()));
    }
    Ok(LinkChecked {
        claims,
        org,
        web,
        secret,
    })
}

/// A link works only while its org waits for a person (Pending or Expired) or its
/// authorization expires soon (`TokenExpiringSoon` True), for the spec it was issued for.
fn still_needed(org: &SalesforceOrg, generation: i64) -> Result<(), Refusal> {
    let name = org.name_any();
    if org.metadata.generation.unwrap_or_default() != generation {
        return Err(Refusal::LinkOutdated(name));
    }
    let status = org.status.clone().unwrap_or_default();
    let waiting = matches!(
        status.state,
        Some(TokenState::Pending | TokenState::Expired)
    );
    if !waiting && !crate::reconcile::decide::forecast::expiring_soon(&status) {
        return Err(Refusal::NotNeeded(name));
    }
    Ok(())
}

fn link_used(secret: Option<&Secret>, id: &str, now: i64) -> bool {
    used_entries(&annotations_of(secret), USED_LINKS_ANNOTATION, now)
        .iter()
        .any(|(n, _)| n == id)
}

fn annotations_of(secret: Option<&Secret>) -> std::collections::BTreeMap<String, String> {
    secret.map(|s| s.annotations().clone()).unwrap_or_default()
}

/// The Salesforce username the org is connected as: what its checks saw, else who last
/// authorized through a link.
fn connected_as(org: &SalesforceOrg, secret: Option<&Secret>) -> Option<String> {
    org.status
        .as_ref()
        .and_then(|s| s.username.clone())
        .or_else(|| secret.and_then(|s| s.annotations().get(AUTHORIZED_BY_ANNOTATION).cloned()))
        .filter(|u| !u.is_empty())
}

fn login_host(org: &SalesforceOrg) -> String {
    url::Url::parse(&org.spec.login_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| org.spec.login_url.clone())
}

/// The cookie attributes every cookie of the flow gets: HttpOnly, SameSite=Lax, and with an
/// https public URL Secure with the `__Host-` prefix (Path=/, no Domain), so no other host
/// or plain-http page can set or read it.
fn cookie(links: &Links, name: &str, value: String, max_age: Duration) -> String {
    let secure = links.secure();
    let path = if secure || links.prefix().is_empty() {
        "/".to_owned()
    } else {
        links.prefix().to_owned()
    };
    Cookie::build((cookie_name(links, name), value))
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build()
        .to_string()
}

fn cookie_name(links: &Links, name: &str) -> String {
    if links.secure() {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// Whether this browser holds the random cookie a login (its state, or the confirmation of
/// another user) is bound to.
fn bound_to_this_browser(links: &Links, headers: &HeaderMap, nonce: &str, bind: &str) -> bool {
    cookie_value(links, headers, &binding_cookie(nonce)).is_some_and(|v| state::binds(&v, bind))
}

fn binding_cookie(nonce: &str) -> String {
    format!("{COOKIE_PREFIX}{nonce}")
}

/// The value of the cookie `name` (with its prefix) that the browser sent.
fn cookie_value(links: &Links, headers: &HeaderMap, name: &str) -> Option<String> {
    let name = cookie_name(links, name);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

async fn confirm_page<S: Salesforce>(
    app: &CallbackState<S>,
    ns: &str,
    name: &str,
    token: &str,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let now = app.clock.unix_seconds();
    let link = check_link(app, ns, name, token, now).await?;
    // One CSRF cookie per browser, kept when present: two links open in two tabs both work.
    let existing = cookie_value(&app.links, headers, CSRF_COOKIE);
    let value = existing.clone().unwrap_or_else(state::new_nonce);
    let csrf = state::sign(
        app.links.key(),
        Purpose::Csrf,
        &CsrfClaims {
            link: link.claims.id.clone(),
            bind: state::binding(&value),
            exp: now + CSRF_LIFETIME.as_secs() as i64,
        },
    );
    let org = &link.org;
    let pinned = org.status.as_ref().and_then(|s| s.org_id.clone());
    let expected = org
        .spec
        .expected_org_id
        .clone()
        .or(pinned)
        .unwrap_or_else(|| "any (the first login pins it)".into());
    let user = connected_as(org, link.secret.as_ref())
        .unwrap_or_else(|| "nobody yet (first login)".into());
    let host = login_host(org);
    let page = FormPage {
        outcome: "confirm",
        title: format!("Log in to Salesforce for {ns}/{name}"),
        message: format!(
            "Continuing opens the Salesforce login at {host}. Log in as a user of the org \
             below; the operator then stores the new tokens for SalesforceOrg {ns}/{name} and \
             resumes its backups. If you did not expect this link, close this page: nothing \
             has happened."
        ),
        facts: vec![
            ("SalesforceOrg".into(), format!("{ns}/{name}")),
            ("Expected org id".into(), expected),
            ("Login host".into(), host),
            ("Connected as".into(), user),
        ],
        action: app.links.start_path(ns, name),
        fields: vec![("t".into(), token.to_owned()), ("csrf".into(), csrf)],
        button: "Continue to Salesforce".into(),
    };
    let mut response = page.into_response();
    if existing.is_none() {
        let set = cookie(&app.links, CSRF_COOKIE, value, CSRF_LIFETIME);
        if let Ok(v) = header::HeaderValue::from_str(&set) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

async fn begin<S: Salesforce>(
    app: &CallbackState<S>,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let now = app.clock.unix_seconds();
    let token = form_param(body, "t").unwrap_or_default();
    let link = check_link(app, ns, name, &token, now).await?;
    let cookie = cookie_value(&app.links, headers, CSRF_COOKIE).ok_or(Refusal::Csrf)?;
    let csrf = form_param(body, "csrf").unwrap_or_default();
    let claims: CsrfClaims =
        state::verify(app.links.keys(), Purpose::Csrf, &csrf, now).map_err(|_| Refusal::Csrf)?;
    if claims.link != link.claims.id || !state::binds(&cookie, &claims.bind) {
        return Err(Refusal::Csrf);
    }
    to_salesforce(
        app,
        &link.org,
        &link.web,
        link.claims.reference(),
        None,
        now,
    )
}

async fn accept_user<S: Salesforce>(
    app: &CallbackState<S>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, (Refusal, String)> {
    let now = app.clock.unix_seconds();
    let token = form_param(body, "confirm").unwrap_or_default();
    let claims: ConfirmUserClaims =
        state::verify(app.links.keys(), Purpose::ConfirmUser, &token, now).map_err(
            |e| match e {
                TokenError::Expired => (Refusal::StateExpired, "-".to_owned()),
                e => (Refusal::BadState(e), "-".to_owned()),
            },
        )?;
    let full = format!("{}/{}", claims.ns, claims.name);
    let fail = |r: Refusal| (r, full.clone());
    if !bound_to_this_browser(&app.links, headers, &claims.nonce, &claims.bind) {
        return Err(fail(Refusal::NoCookie));
    }
    let (org, web) = org_for(&app.client, &claims.ns, &claims.name, &claims.uid)
        .await
        .map_err(fail)?;
    still_needed(&org, claims.link.generation).map_err(fail)?;
    let secrets: Api<Secret> = Api::namespaced(app.client.clone(), &claims.ns);
    let secret = secrets
        .get_opt(&org.spec.token_secret_ref.name)
        .await
        .map_err(|e| fail(e.into()))?;
    if link_used(secret.as_ref(), &claims.link.id, now) {
        return Err(fail(Refusal::LinkUsed(claims.name.clone())));
    }
    to_salesforce(app, &org, &web, claims.link, Some(claims.user), now).map_err(fail)
}

/// Starts a login: a signed state bound to a fresh random cookie, and a redirect to the
/// org's authorize URL.
fn to_salesforce<S: Salesforce>(
    app: &CallbackState<S>,
    org: &SalesforceOrg,
    web: &WebServerAuth,
    link: LinkRef,
    accept_user: Option<String>,
    now: i64,
) -> Result<Response, Refusal> {
    let ns = org.namespace().unwrap_or_default();
    let name = org.name_any();
    let nonce = state::new_nonce();
    let value = state::new_nonce();
    let hint = accept_user
        .clone()
        .or_else(|| org.status.as_ref().and_then(|s| s.username.clone()));
    let state_claims = StateClaims {
        ns: ns.clone(),
        name: name.clone(),
        uid: org.uid().unwrap_or_default(),
        link,
        nonce: nonce.clone(),
        bind: state::binding(&value),
        accept_user,
        exp: now + STATE_LIFETIME.as_secs() as i64,
    };
    let signed = state::sign(app.links.key(), Purpose::State, &state_claims);
    let verifier = state::pkce_verifier(app.links.key(), &nonce);
    let scopes: Vec<&str> = web.scopes.iter().map(AsRef::as_ref).collect();
    let callback_url = app.links.callback_url();
    let request = AuthorizeRequest {
        login_url: org.spec.login_url.trim_end_matches('/'),
        client_id: &web.client_id,
        redirect_uri: &callback_url,
        scopes: &scopes,
        state: &signed,
        login_hint: hint.as_deref(),
        prompt: Some(PROMPT),
    };
    let location = authorize_url_with(&app.allowlist, &request, &verifier)
        .map_err(|e| Refusal::Config(format!("spec.loginUrl: {e}")))?;
    let cookie = cookie(&app.links, &binding_cookie(&nonce), value, STATE_LIFETIME);
    info!(org = %format!("{ns}/{name}"), "re-auth started");
    Ok((
        StatusCode::SEE_OTHER,
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
        Ok(response) => response,
        Err((refusal, org)) => refused(refusal, &org),
    }
}

/// A callback whose state checked out: the org it is for and its token Secret as read.
struct Checked {
    claims: StateClaims,
    /// The key that signed the state (during a key rollover, maybe the previous one).
    key: StateKey,
    org: SalesforceOrg,
    web: WebServerAuth,
    secrets: Api<Secret>,
    current: Option<Secret>,
    /// The Secret's resourceVersion ("" without one).
    version: String,
    /// `namespace/name`, for pages and logs.
    full: String,
}

/// Checks the state: signature, expiry, this browser's cookie, the org and its uid, that it
/// was not used before, and that its link still works (not used, the org still waiting for
/// a person, spec unchanged).
async fn check_state<S: Salesforce>(
    app: &CallbackState<S>,
    headers: &HeaderMap,
    uri: &Uri,
    now: i64,
) -> Result<Checked, (Refusal, String)> {
    let unknown = || "-".to_owned();
    let token = query_param(uri, "state").ok_or((Refusal::MissingState, unknown()))?;
    let (claims, key): (StateClaims, _) =
        state::verify_with(app.links.keys(), Purpose::State, &token, now).map_err(|e| match e {
            TokenError::Expired => (Refusal::StateExpired, unknown()),
            e => (Refusal::BadState(e), unknown()),
        })?;
    let key = key.clone();
    let full = format!("{}/{}", claims.ns, claims.name);
    let fail = |r: Refusal| (r, full.clone());
    if !bound_to_this_browser(&app.links, headers, &claims.nonce, &claims.bind) {
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
    if used_states(&annotations_of(current.as_ref()), now)
        .iter()
        .any(|(n, _)| *n == claims.nonce)
    {
        return Err(fail(Refusal::Replayed(claims.name.clone())));
    }
    if link_used(current.as_ref(), &claims.link.id, now) {
        return Err(fail(Refusal::LinkUsed(claims.name.clone())));
    }
    still_needed(&org, claims.link.generation).map_err(fail)?;
    let version = current
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default();
    Ok(Checked {
        claims,
        key,
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
    let verifier = state::pkce_verifier(&c.key, &c.claims.nonce);
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
) -> Result<Response, (Refusal, String)> {
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
    let previous = connected_as(&c.org, c.current.as_ref());
    if let Some(page) = another_user(app, &c, previous.as_deref(), &identity, &tokens, now).await {
        return Ok(page);
    }
    // The authorization time (the forecast counts the policy from it) is taken after
    // Salesforce issued the tokens, rounded up to a whole second, so that the forecast expiry
    // is never earlier than Salesforce's own.
    let issued = app.clock.now();
    let authorized_at = issued.as_second() + i64::from(issued.subsec_nanosecond() > 0);
    let superseded = store(app, &c, &creds, &tokens, &identity, authorized_at)
        .await
        .map_err(fail)?;
    let full = &c.full;
    info!(org = %full, org_id = %identity.org_id, username = %identity.username, "re-authorized: new tokens stored");
    reauthorized_event(app, &c.org, &identity, authorized_at).await;
    if let Some(previous) = previous.filter(|p| !p.eq_ignore_ascii_case(&identity.username)) {
        user_changed_event(app, &c.org, &previous, &identity.username).await;
    }
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
    }
    .into_response())
}

/// A login as another Salesforce user than the org was connected as, not confirmed yet:
/// the tokens are revoked unstored, and the page asks the person to confirm; confirming
/// logs in once more, accepting that user. Nothing is held between the two logins (no
/// token in memory, in a Secret or in the page), so a page left open or a confirmation never
/// sent leaves no live grant behind, and every replica can serve the confirmation.
async fn another_user<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    previous: Option<&str>,
    identity: &Identity,
    tokens: &TokenResponse,
    now: i64,
) -> Option<Response> {
    let previous = previous?;
    let user = &identity.username;
    let accepted = c
        .claims
        .accept_user
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(user));
    if previous.eq_ignore_ascii_case(user) || accepted {
        return None;
    }
    discard(app, c.org.spec.login_url.trim_end_matches('/'), tokens).await;
    let token = state::sign(
        app.links.key(),
        Purpose::ConfirmUser,
        &ConfirmUserClaims {
            ns: c.claims.ns.clone(),
            name: c.claims.name.clone(),
            uid: c.claims.uid.clone(),
            link: c.claims.link.clone(),
            user: user.clone(),
            nonce: c.claims.nonce.clone(),
            bind: c.claims.bind.clone(),
            exp: now + STATE_LIFETIME.as_secs() as i64,
        },
    );
    let full = &c.full;
    info!(org = %full, username = %user, previous = %previous, "re-auth as another user: waiting for confirmation");
    Some(
        FormPage {
            outcome: "confirm-user",
            title: "Connect as another user?".into(),
            message: format!(
                "You logged in as {user}, but SalesforceOrg {full} was connected as {previous}. Nothing was stored: the tokens of this login were revoked. Backups will run                  as {user} from now on if you continue; you then log in once more as {user}. If this is not what you meant, close this page and open the re-auth link                  again to log in as {previous}."
            ),
            facts: vec![
                ("SalesforceOrg".into(), full.clone()),
                ("Connected as".into(), previous.to_owned()),
                ("You logged in as".into(), user.clone()),
                ("Org id".into(), identity.org_id.clone()),
            ],
            action: app.links.confirm_user_path(),
            fields: vec![("confirm".into(), token)],
            button: format!("Connect as {user}"),
        }
        .into_response(),
    )
}

/// The recorder of the callback's Events.
fn recorder<S: Salesforce>(app: &CallbackState<S>) -> Recorder {
    Recorder::new(
        app.client.clone(),
        kube::runtime::events::Reporter {
            controller: "sforg-operator".into(),
            instance: None,
        },
    )
}

/// The Event of every successful login through a link: who, when, which org.
async fn reauthorized_event<S: Salesforce>(
    app: &CallbackState<S>,
    org: &SalesforceOrg,
    identity: &Identity,
    now: i64,
) {
    let at = k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default();
    recorder(app)
        .publish(
            &reauthorized(&identity.username, at, &identity.org_id),
            &kube::Resource::object_ref(org, &()),
        )
        .await;
}

/// The Event "re-authorized by USER at TIME (org ID)".
fn reauthorized(
    user: &str,
    at: k8s_openapi::jiff::Timestamp,
    org_id: &str,
) -> kube::runtime::events::Event {
    kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: REAUTHORIZED.into(),
        note: Some(format!("Re-authorized by {user} at {at} ({org_id})")),
        action: "Reauthorize".into(),
        secondary: None,
    }
}

/// An Event on the org: it is now connected as another Salesforce user.
async fn user_changed_event<S: Salesforce>(
    app: &CallbackState<S>,
    org: &SalesforceOrg,
    previous: &str,
    user: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let recorder = recorder(app);
    let event = Event {
        type_: EventType::Warning,
        reason: AUTHORIZED_USER_CHANGED.into(),
        note: Some(format!(
            "Re-authorized through the re-auth link as {user}; it was connected as {previous}. Backups now run as {user}."
        )),
        action: "Reauthorize".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &kube::Resource::object_ref(org, &()))
        .await;
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

/// Writes the tokens, and in the same write marks the state and the link used and records
/// who authorized, under the Secret's resourceVersion. Returns the refresh token the new
/// tokens replace. Tokens that are not stored are revoked.
async fn store<S: Salesforce>(
    app: &CallbackState<S>,
    c: &Checked,
    creds: &AppCredentials,
    tokens: &TokenResponse,
    identity: &Identity,
    now: i64,
) -> Result<Option<SecretString>, Refusal> {
    let write = TokenWrite {
        response: tokens,
        client_id: &creds.client_id,
        client_secret: creds.client_secret.as_ref(),
        origin: Origin::Login {
            nonce: &c.claims.nonce,
            expires: c.claims.exp,
            link: (&c.claims.link.id, c.claims.link.exp),
            authorized_by: &identity.username,
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
    discard(app, c.org.spec.login_url.trim_end_matches('/'), tokens).await;
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
    fn the_reauthorized_event_says_who_when_and_which_org() {
        let at = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default();
        let event = reauthorized("ann@acme.com", at, "00D000000000001AAA");
        assert_eq!(event.reason, REAUTHORIZED);
        assert_eq!(event.type_, kube::runtime::events::EventType::Normal);
        assert_eq!(
            event.note.as_deref(),
            Some("Re-authorized by ann@acme.com at 2027-01-15T08:00:00Z (00D000000000001AAA)")
        );
    }

    #[test]
    fn cookies_are_found_by_name_and_prefixed_under_https() {
        let key = StateKey::from_bytes(&[5; 32]).unwrap();
        let plain =
            Links::new("http://127.0.0.1:8080", key.clone(), DEFAULT_LINK_LIFETIME).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; sforg_reauth_abc=v4lue; __Host-sforg_reauth_abc=h0st"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            cookie_value(&plain, &headers, "sforg_reauth_abc").as_deref(),
            Some("v4lue")
        );
        assert_eq!(cookie_value(&plain, &headers, "sforg_reauth_ab"), None);
        let https =
            Links::new("https://sforg.example.com/ops", key, DEFAULT_LINK_LIFETIME).unwrap();
        assert_eq!(
            cookie_value(&https, &headers, "sforg_reauth_abc").as_deref(),
            Some("h0st")
        );
        let set = cookie(&https, "sforg_reauth_abc", "r4nd".into(), STATE_LIFETIME);
        for part in [
            "__Host-sforg_reauth_abc=r4nd",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(set.contains(part), "{part} in {set}");
        }
        assert!(!set.contains("Domain"), "{set}");
        let set = cookie(&plain, "sforg_reauth_abc", "r4nd".into(), STATE_LIFETIME);
        assert!(set.starts_with("sforg_reauth_abc=r4nd"), "{set}");
        assert!(!set.contains("Secure"), "{set}");
    }
}
