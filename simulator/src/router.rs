//! The Salesforce-facing router, shared by the HTTPS listener (reached through the
//! proxy) and the plain HTTP listener. Fault injection and counting wrap everything.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::authorize;
use crate::control::Shared;
use crate::faults;
use crate::host::SfHost;
use crate::oauth;
use crate::pages;
use crate::resources;

pub(crate) fn salesforce_router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/services/oauth2/authorize",
            get(authorize::authorize_get).post(authorize::authorize_login),
        )
        .route(
            "/services/oauth2/authorize/login",
            post(authorize::authorize_login),
        )
        .route(
            "/services/oauth2/authorize/consent",
            post(authorize::authorize_consent),
        )
        .route("/services/oauth2/token", post(oauth::token))
        .route("/services/oauth2/introspect", post(oauth::introspect))
        .route(
            "/services/oauth2/revoke",
            post(oauth::revoke).get(oauth::revoke),
        )
        .route(
            "/services/oauth2/userinfo",
            get(resources::userinfo).post(resources::userinfo),
        )
        .route(
            "/id/{org}/{user}",
            get(resources::identity_url).post(resources::identity_url),
        )
        .route("/.well-known/openid-configuration", get(oauth::well_known))
        .route("/services/data/{version}/limits", get(resources::limits))
        .route("/services/data/{version}/query", get(resources::query))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            unknown_my_domain,
        ))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults::middleware,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(shared)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::error(
            "not_found",
            "The requested URL was not found on this server",
        )),
    )
        .into_response()
}

/// A My Domain that no org owns does not exist.
async fn unknown_my_domain(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let host = SfHost::from_request(request.headers(), request.uri());
    if let SfHost::MyDomain(name) = &host
        && shared.state().org_by_host(name).is_none()
    {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
            pages::error("not_found", "unknown My Domain"),
        )
            .into_response();
    }
    next.run(request).await
}

/// Logs method, host, path and status; never the query or bodies (they carry secrets).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let host = SfHost::from_request(request.headers(), request.uri())
        .name()
        .to_string();
    let response = next.run(request).await;
    tracing::debug!(%method, host, path, status = response.status().as_u16(), "request");
    response
}
