//! `sforg-operator dashboard`: the Organizations page in a browser.
//!
//! A local web server that talks to the cluster with the user's own kubeconfig (like
//! kubectl: `--context`, `-n`, `-A`), so a person sees and does exactly what their RBAC
//! allows. It lists the orgs with their badge, reason and what to do, keeps the rows live from
//! one watch (server-sent events), and offers Update Token (the re-auth link in status, or why
//! there is none), Check now (the check annotation, answered by the operator's `Checked`
//! Event) and Details (conditions, Events, held CronJobs).
//!
//! Safety: loopback by default; a per-run secret in the opening URL becomes a cookie
//! ([`guard`]); actions need a CSRF token and a same-origin request; a strict Content Security
//! Policy allows only the dashboard's own script and style; every field is escaped by the
//! templates ([`view`]); the token Secret is never read.

pub mod guard;
pub mod live;
pub mod view;

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use maud::Markup;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::cli::{self, KubeArgs};
use crate::crd::SalesforceOrg;
use crate::reconcile::{CHECK_ANNOTATION, CHECKED_EVENT};
use guard::{Guard, Refusal};
pub use live::Scope;
use live::{Live, Numbered, Update};
use view::PageContext;

/// The field manager of the dashboard's writes (the check annotation).
pub const FIELD_MANAGER: &str = "sforg-operator-dashboard";

/// How long a requested check's result is awaited.
pub const CHECK_WAIT: Duration = Duration::from_secs(60);

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only the dashboard's own script, style and connections; nothing inline, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `dashboard`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  sforg-operator dashboard                  # orgs in the current namespace, opens the browser
  sforg-operator dashboard -A               # every namespace you may list
  sforg-operator dashboard -n backups --context prod --no-open
  kubectl sforg dashboard -A                # the same, as a kubectl plugin

The printed URL carries a per-run secret: only a browser that opened it can use the page.")]
pub struct DashboardArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Show orgs in every namespace (those your RBAC lets you list).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Listen on this address; the default is loopback on a free port. Anything but loopback
    /// lets other hosts reach the page (they still need the URL's secret).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Print the URL without opening a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The kubeconfig.
    #[error(transparent)]
    Kube(#[from] cli::CliError),
    /// The port.
    #[error("cannot listen on {addr} ({source}); pick another address with --listen")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the dashboard's server failed: {0}")]
    Serve(std::io::Error),
}

/// What a dashboard needs.
#[derive(Clone)]
pub struct Options {
    /// A client with the person's own credentials.
    pub client: Client,
    /// Where to look.
    pub scope: Scope,
    /// The kubeconfig context's name, shown on the page.
    pub context: Option<String>,
    /// Where to listen.
    pub listen: SocketAddr,
}

/// A started dashboard.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The opening URL, with the per-run secret.
    pub url: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server stops.
    pub async fn wait(mut self) -> Result<(), DashboardError> {
        let result = (&mut self.server).await;
        self.watch.abort();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DashboardError::Serve(e)),
            Err(e) => Err(DashboardError::Serve(std::io::Error::other(e))),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        self.watch.abort();
    }
}

struct App {
    client: Client,
    scope: Scope,
    guard: Guard,
    live: Live,
    context: Option<String>,
}

impl App {
    fn page_context(&self) -> PageContext {
        PageContext {
            context: self.context.clone(),
            namespace: self.scope.namespace().map(str::to_owned),
            csrf: self.guard.csrf().to_owned(),
        }
    }
}

/// Starts the server and its watch; stops when `shutdown` completes.
pub async fn start(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, DashboardError> {
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| DashboardError::Listen {
                addr: options.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Listen {
            addr: options.listen,
            source,
        })?;
    let port = addr.port();
    let mut hosts = vec![format!("{addr}")];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{port}"));
    }
    let shown = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{port}")
    } else {
        format!("{addr}")
    };
    if addr.ip().is_unspecified() {
        hosts.push(shown.clone());
        hosts.push(format!("localhost:{port}"));
    }
    let guard = Guard::new(port, hosts);
    let base = format!("http://{shown}");
    let url = format!("{base}/?{}", guard.opening_query());
    let live = Live::new();
    let watch = tokio::spawn(
        live.clone()
            .run(options.client.clone(), options.scope.clone()),
    );
    let app = Arc::new(App {
        client: options.client,
        scope: options.scope,
        guard,
        live,
        context: options.context,
    });
    let router = router(app);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(async move {
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let graceful = axum::serve(listener, router)
            .with_graceful_shutdown(stopped(stop.clone()))
            .into_future();
        // Live pages keep their event streams open for ever: give requests a moment to
        // finish, then stop anyway.
        let grace = async move {
            stopped(stop).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            result = graceful => result,
            () = grace => Ok(()),
        }
    });
    Ok(Running {
        base,
        url,
        server,
        watch,
    })
}

/// `sforg-operator dashboard`.
pub async fn run(
    args: &DashboardArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let (client, namespace) = cli::connect(&args.kube).await?;
    let scope = if args.all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(namespace)
    };
    let context = match &args.kube.context {
        Some(c) => Some(c.clone()),
        None => kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.current_context),
    };
    let running = start(
        Options {
            client,
            scope,
            context,
            listen: args.listen,
        },
        shutdown,
    )
    .await?;
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: listening on {}, reachable from other hosts; only the URL's secret \
             protects it",
            args.listen
        );
    }
    println!("{}", running.url);
    if args.no_open {
        eprintln!("Open the URL above in a browser; Ctrl-C stops the dashboard.");
    } else if let Err(e) = cli::open_in_browser(&running.url) {
        eprintln!("{e}");
    } else {
        eprintln!("Opened the dashboard in your browser; Ctrl-C stops it.");
    }
    running.wait().await
}

fn router(app: Arc<App>) -> Router {
    let guarded = Router::new()
        .route("/static/app.js", get(script))
        .route("/static/app.css", get(style))
        .route("/events", get(events))
        .route("/rows", get(rows))
        .route("/orgs/{ns}/{name}", get(details))
        .route("/orgs/{ns}/{name}/check", post(check))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_secret));
    Router::new()
        .route("/", get(open))
        .merge(guarded)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Headers on every answer: the CSP, no caching, no sniffing, no framing, no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn refused(r: Refusal) -> Response {
    html(
        StatusCode::FORBIDDEN,
        view::message_page("Refused", r.message()),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn require_secret(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    match app.guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(r) if request.method() == Method::POST => {
            json_response(StatusCode::FORBIDDEN, json!({"error": r.message()}))
        }
        Err(r) => refused(r),
    }
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        view::message_page("Not found", "There is no such page in the dashboard."),
    )
}

/// A query parameter's value.
fn query_param(request: &Request, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /?s=SECRET` stores the secret in a cookie and redirects to the bare URL (so the secret
/// leaves the address bar and history); `GET /` with the cookie is the list.
async fn open(State(app): State<Arc<App>>, request: Request) -> Response {
    if let Some(secret) = query_param(&request, guard::SECRET_PARAM) {
        return match app.guard.check_opening(request.headers(), &secret) {
            Ok(()) => (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, app.guard.set_cookie()),
                    (header::LOCATION, "/".to_owned()),
                ],
            )
                .into_response(),
            Err(r) => refused(r),
        };
    }
    if let Err(r) = app.guard.check(request.method(), request.headers()) {
        return refused(r);
    }
    app.live.wait_ready(Duration::from_secs(10)).await;
    let snapshot = app.live.snapshot();
    let orgs: Vec<&SalesforceOrg> = snapshot.orgs.iter().collect();
    html(
        StatusCode::OK,
        view::list_page(
            &app.page_context(),
            &orgs,
            snapshot.seq,
            snapshot.problem.as_deref(),
            Timestamp::now(),
        ),
    )
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

/// `GET /rows`: the table body, for a page that missed updates.
async fn rows(State(app): State<Arc<App>>) -> Response {
    let snapshot = app.live.snapshot();
    let body = json!({
        "seq": snapshot.seq,
        "html": view::rows(snapshot.orgs.iter(), Timestamp::now()).into_string(),
        "problem": snapshot.problem,
    });
    json_response(StatusCode::OK, body)
}

fn sse(name: &str, data: serde_json::Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

fn to_sse(n: &Numbered) -> SseEvent {
    match &n.update {
        Update::Row { key, html } => sse("row", json!({"key": key, "html": html})),
        Update::Remove { key } => sse("remove", json!({ "key": key })),
        Update::Reset => sse("reset", json!({})),
        Update::Problem(p) => sse("problem", json!({ "message": p })),
        Update::Checked {
            key,
            message,
            failed,
        } => sse(
            "checked",
            json!({"key": key, "message": message, "failed": failed}),
        ),
    }
}

/// `GET /events?since=SEQ`: the live updates after the page's own `seq`.
async fn events(
    State(app): State<Arc<App>>,
    request: Request,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let since = query_param(&request, "since").and_then(|s| s.parse::<u64>().ok());
    let rx = app.live.subscribe();
    let current = app.live.snapshot().seq;
    // Changes between the page's render and this subscription: start with a full reload.
    let first = (since != Some(current)).then(|| sse("reset", json!({})));
    let rest = futures::stream::unfold((rx, current), |(mut rx, seen)| async move {
        loop {
            match rx.recv().await {
                Ok(n) if n.seq <= seen && !matches!(n.update, Update::Checked { .. }) => continue,
                Ok(n) => {
                    let seen = seen.max(n.seq);
                    return Some((to_sse(&n), (rx, seen)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some((sse("reset", json!({})), (rx, seen)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::stream::iter(first).chain(rest).map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A Kubernetes API failure, said so the person knows what to do.
fn api_message(e: &kube::Error, what: &str) -> (StatusCode, String) {
    match e {
        kube::Error::Api(s) if s.code == 403 => (
            StatusCode::FORBIDDEN,
            format!(
                "Not allowed: your Kubernetes user may not {what} ({}). Ask your cluster \
                 administrator for that permission.",
                s.message
            ),
        ),
        kube::Error::Api(s) if s.code == 404 => {
            (StatusCode::NOT_FOUND, format!("Not found: {}", s.message))
        }
        other => (
            StatusCode::BAD_GATEWAY,
            format!("The Kubernetes API refused to {what}: {other}"),
        ),
    }
}

/// `GET /orgs/{ns}/{name}`: conditions, Events in order, held CronJobs.
async fn details(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if !app.scope.covers(&ns) {
        return not_found().await;
    }
    let orgs: Api<SalesforceOrg> = Api::namespaced(app.client.clone(), &ns);
    let org = match orgs.get(&name).await {
        Ok(org) => org,
        Err(e) => {
            let (status, message) = api_message(&e, &format!("read SalesforceOrg {ns}/{name}"));
            return html(status, view::message_page("Cannot show this org", &message));
        }
    };
    let uid = org.uid();
    let events: Api<Event> = Api::namespaced(app.client.clone(), &ns);
    let events = match events.list(&ListParams::default()).await {
        Ok(list) => {
            let mut mine: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("SalesforceOrg")
                            && r.name.as_deref() == Some(name.as_str())
                            && (r.uid.is_none() || r.uid == uid)
                    })
                })
                .collect();
            view::in_order(&mut mine);
            Ok(mine)
        }
        Err(e) => Err(api_message(&e, &format!("list Events in namespace {ns}")).1),
    };
    let held = held_cronjobs(&app.client, &org, &ns).await;
    let seq = app.live.snapshot().seq;
    html(
        StatusCode::OK,
        view::details_page(
            &app.page_context(),
            &org,
            &events,
            &held,
            seq,
            Timestamp::now(),
        ),
    )
}

/// The CronJobs the org holds: those its status lists and those whose holders annotation
/// names it.
async fn held_cronjobs(
    client: &Client,
    org: &SalesforceOrg,
    ns: &str,
) -> view::Section<view::HeldCronJob> {
    let name = org.name_any();
    let listed: Vec<String> = org
        .status
        .as_ref()
        .map(|s| s.suspended_cron_jobs.clone())
        .unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_message(&e, &format!("list CronJobs in namespace {ns}")).1)?;
    let mut held: Vec<view::HeldCronJob> = list
        .items
        .iter()
        .filter(|cj| {
            listed.contains(&cj.name_any()) || crate::dependents::holders(cj).contains(&name)
        })
        .map(view::HeldCronJob::of)
        .collect();
    let missing: Vec<String> = listed
        .into_iter()
        .filter(|n| !held.iter().any(|h| &h.name == n))
        .collect();
    for missing in missing {
        held.push(view::HeldCronJob {
            name: missing,
            schedule: None,
            suspended: None,
            holders: "(the CronJob no longer exists)".into(),
        });
    }
    held.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(held)
}

/// `POST /orgs/{ns}/{name}/check`: sets the check annotation with the person's credentials,
/// then waits in the background for the operator's `Checked` Event and pushes it to the
/// pages.
async fn check(State(app): State<Arc<App>>, Path((ns, name)): Path<(String, String)>) -> Response {
    let fail =
        |status: StatusCode, message: String| json_response(status, json!({"error": message}));
    if !app.scope.covers(&ns) {
        return fail(
            StatusCode::NOT_FOUND,
            format!("{ns}/{name} is not shown by this dashboard"),
        );
    }
    let key = format!("{ns}/{name}");
    let orgs: Api<SalesforceOrg> = Api::namespaced(app.client.clone(), &ns);
    let org = match app.live.get(&ns, &name) {
        Some(org) => org,
        None => match orgs.get(&name).await {
            Ok(org) => org,
            Err(e) => {
                let (status, message) = api_message(&e, &format!("read SalesforceOrg {key}"));
                return fail(status, message);
            }
        },
    };
    if let Some(why) = view::Row::of(&org, Timestamp::now()).no_check {
        return fail(StatusCode::CONFLICT, why);
    }
    // The Events' resourceVersion before the request: the answer is the first Checked Event
    // about this org after it.
    let events: Api<Event> = Api::namespaced(app.client.clone(), &ns);
    let since = events
        .list_metadata(&ListParams::default().limit(1))
        .await
        .ok()
        .and_then(|l| l.metadata.resource_version);
    let stamp = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {CHECK_ANNOTATION: stamp}}});
    if let Err(e) = orgs
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
    {
        let (status, message) = api_message(
            &e,
            &format!(
                "patch SalesforceOrg {key}, which Check now needs (it sets {CHECK_ANNOTATION})"
            ),
        );
        return fail(status, message);
    }
    let Some(since) = since else {
        return json_response(
            StatusCode::ACCEPTED,
            json!({"message": format!(
                "Check requested. You may not list Events in {ns}, so the result shows here only \
                 as a change of the row."
            )}),
        );
    };
    follow_check(app.live.clone(), key, events, since, org.uid());
    json_response(
        StatusCode::ACCEPTED,
        json!({"message": "Check requested; waiting for the operator\u{2026}"}),
    )
}

/// Waits in the background for the operator's answer to a check and shows it on the row.
fn follow_check(live: Live, key: String, events: Api<Event>, since: String, uid: Option<String>) {
    tokio::spawn(async move {
        let (message, failed) = match await_checked(events, &since, uid.as_deref()).await {
            Ok(Some(note)) => (format!("Checked just now: {note}"), false),
            Ok(None) => (
                format!(
                    "No result within {}s: is the operator running, leading, and watching \
                     this namespace?",
                    CHECK_WAIT.as_secs()
                ),
                true,
            ),
            Err(e) => (format!("Could not follow the check's Events: {e}"), true),
        };
        live.checked(key, message, failed);
    });
}

/// The note of the first `Checked` Event about `uid` after `since`, or `None` after
/// [`CHECK_WAIT`].
async fn await_checked(
    events: Api<Event>,
    since: &str,
    uid: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    let deadline = tokio::time::Instant::now() + CHECK_WAIT;
    let mut version = since.to_owned();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let params = WatchParams::default().timeout(left.as_secs().clamp(1, 290) as u32);
        let stream = events.watch(&params, &version).await?;
        let mut stream = std::pin::pin!(stream);
        let found = tokio::time::timeout(left, async {
            while let Some(event) = stream.next().await {
                match event? {
                    WatchEvent::Added(e) | WatchEvent::Modified(e) => {
                        if let Some(v) = e.resource_version() {
                            version = v;
                        }
                        let about = e.regarding.as_ref().and_then(|r| r.uid.as_deref());
                        if e.reason.as_deref() == Some(CHECKED_EVENT)
                            && about.is_some()
                            && about == uid
                        {
                            return Ok(Some(e.note.unwrap_or_default()));
                        }
                    }
                    WatchEvent::Error(s) => return Err(kube::Error::Api(s)),
                    _ => {}
                }
            }
            Ok(None)
        })
        .await;
        match found {
            Ok(Ok(Some(note))) => return Ok(Some(note)),
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(None),
        }
    }
}
