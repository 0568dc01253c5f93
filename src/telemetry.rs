//! Logging set-up, and the HTTP server for `/metrics`, `/healthz` and `/readyz`.
//!
//! Log lines carry names, namespaces, hosts and reasons; token values never reach them because
//! tokens only travel as `SecretString`, whose `Debug` is redacted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::http_server::Limits;
use crate::metrics::Metrics;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default level (info).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Readiness, as reported by `/readyz`.
///
/// The leader (or a process without leader election) is ready once the controller's cache of
/// SalesforceOrgs has synced: before that it would act on a partial view. A standby is ready
/// while it can reach the Lease: that is what it needs to take over, and a standby reported
/// unready would stall rolling updates and hide a healthy spare. (The controller of a new
/// leader syncs its caches within seconds of taking over.)
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    synced: AtomicBool,
    standby: AtomicBool,
}

impl Health {
    /// Records whether the controller's caches have synced (false when it stops).
    pub fn set_synced(&self, synced: bool) {
        self.inner.synced.store(synced, Ordering::Relaxed);
    }

    /// Records whether this replica is a standby that can take over (it reached the Lease).
    pub fn set_standby_ready(&self, ready: bool) {
        self.inner.standby.store(ready, Ordering::Relaxed);
    }

    /// Ready, and why (or why not).
    pub fn readiness(&self) -> (bool, &'static str) {
        if self.inner.synced.load(Ordering::Relaxed) {
            (true, "ready: the controller's caches are synced")
        } else if self.inner.standby.load(Ordering::Relaxed) {
            (true, "ready: standby, able to take over the leader lease")
        } else {
            (
                false,
                "not ready: waiting for the controller's caches to sync or for the leader lease",
            )
        }
    }
}

/// `/metrics`, `/healthz` (the process serves requests) and `/readyz` (see [`Health`]).
pub fn router(metrics: Arc<Metrics>, health: Health) -> Router {
    metrics_router(metrics).merge(health_router(health))
}

/// `/healthz` and `/readyz` alone, for a separate address the kubelet can probe while
/// `/metrics` listens on loopback only.
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let (ready, why) = health.readiness();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (code, format!("{why}\n")) }
            }),
        )
}

fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                match metrics.encode() {
                    Ok(text) => {
                        ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
                    }
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "could not render the metrics\n",
                    )
                        .into_response(),
                }
            }
        }),
    )
}

/// Why the metrics and health server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {addr} for metrics and health ({source}); pick a free address with --metrics-listen"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the metrics and health server stopped: {0}")]
    Serve(std::io::Error),
}

/// Binds the metrics and health address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` resolves, with the limits of
/// [`crate::http_server`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    crate::http_server::serve(listener, router, Limits::DEFAULT, shutdown).await;
    Ok(())
}

/// Serves `router` on `listener` from a thread and runtime of its own (see
/// [`crate::http_server::spawn_isolated`]), so that no client of `/metrics` or the probes can
/// delay the controller.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    crate::http_server::spawn_isolated(
        "metrics-server",
        listener,
        router,
        Limits::DEFAULT,
        shutdown,
    )
    .map(|_| ())
    .map_err(ServeError::Serve)
}
