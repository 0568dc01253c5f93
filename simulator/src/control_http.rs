//! The control surface over HTTP JSON (`/_sim/...` on its own loopback port), for the
//! demo and for scripts. Each route maps onto one [`Control`] method.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::control::{Control, DemoOptions};
use crate::error::SimError;
use crate::faults::Fault;
use crate::sim::ReadyInfo;
use crate::spec::{AppKind, AppSpec, OrgSpec, PermittedUsers, RefreshTokenPolicy, UserSpec};

#[derive(Clone)]
struct Ctx {
    control: Control,
    info: Arc<ReadyInfo>,
    ca_pem: Arc<String>,
}

struct ApiError(StatusCode, String);

impl From<SimError> for ApiError {
    fn from(error: SimError) -> Self {
        let status = match &error {
            SimError::UnknownOrg(_) | SimError::UnknownUser(_) | SimError::UnknownApp(_) => {
                StatusCode::NOT_FOUND
            }
            SimError::AlreadyExists(_) => StatusCode::CONFLICT,
            SimError::Invalid(_) | SimError::UnknownRefreshToken | SimError::Jwt(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn ok<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

fn done() -> ApiResult {
    ok(json!({ "ok": true }))
}

pub(crate) fn router(control: Control, info: Arc<ReadyInfo>, ca_pem: Arc<String>) -> Router {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/info", get(info_route))
        .route("/_sim/ca.pem", get(ca_route))
        .route("/_sim/seed-demo", post(seed_demo))
        .route("/_sim/orgs", get(list_orgs).post(create_org))
        .route("/_sim/orgs/{org}", get(get_org))
        .route("/_sim/orgs/{org}/refresh-sandbox", post(refresh_sandbox))
        .route("/_sim/orgs/{org}/my-domain", post(set_my_domain))
        .route("/_sim/users", get(list_users).post(create_user))
        .route("/_sim/users/{user}", get(get_user))
        .route("/_sim/users/{user}/deactivate", post(deactivate))
        .route("/_sim/users/{user}/reactivate", post(reactivate))
        .route("/_sim/users/{user}/password", post(set_password))
        .route(
            "/_sim/users/{user}/approve-uninstalled",
            post(approve_uninstalled),
        )
        .route("/_sim/users/{user}/revoke-tokens", post(revoke_user_tokens))
        .route(
            "/_sim/users/{user}/refresh-tokens",
            get(valid_refresh_tokens),
        )
        .route("/_sim/apps", get(list_apps).post(create_app))
        .route("/_sim/apps/{app}", get(get_app))
        .route("/_sim/apps/{app}/install", post(install))
        .route("/_sim/apps/{app}/uninstall", post(uninstall))
        .route("/_sim/apps/{app}/block", post(block))
        .route("/_sim/apps/{app}/unblock", post(unblock))
        .route("/_sim/apps/{app}/rotation", post(rotation))
        .route(
            "/_sim/apps/{app}/refresh-token-policy",
            post(refresh_policy),
        )
        .route("/_sim/apps/{app}/session-timeout", post(session_timeout))
        .route("/_sim/apps/{app}/permitted-users", post(permitted_users))
        .route("/_sim/apps/{app}/pre-authorize", post(pre_authorize))
        .route("/_sim/apps/{app}/permission-set", post(app_permission_set))
        .route("/_sim/apps/{app}/require-secret", post(require_secret))
        .route("/_sim/apps/{app}/require-pkce", post(require_pkce))
        .route("/_sim/apps/{app}/revoke-tokens", post(revoke_app_tokens))
        .route(
            "/_sim/users/{user}/permission-set",
            post(user_permission_set),
        )
        .route("/_sim/apps/{app}/jwt-key", post(jwt_key))
        .route("/_sim/apps/{app}/jwt-key/test", post(jwt_test_key))
        .route("/_sim/apps/{app}/run-as", post(run_as))
        .route("/_sim/apps/{app}/redirect-uris", post(redirect_uris))
        .route("/_sim/apps/{app}/secret/rotate", post(rotate_secret))
        .route("/_sim/tokens/mint", post(mint))
        .route("/_sim/tokens/check", post(check_token))
        .route("/_sim/refresh-tokens/revoke", post(revoke_refresh_token))
        .route("/_sim/sessions/expire", post(expire_sessions))
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance_clock))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/faults/{id}", delete(remove_fault))
        .route("/_sim/calls", get(calls).delete(reset_calls))
        .route(
            "/_sim/proxy/connects",
            get(proxy_connects).delete(clear_proxy_connects),
        )
        .with_state(Ctx {
            control,
            info,
            ca_pem,
        })
}

async fn info_route(State(ctx): State<Ctx>) -> ApiResult {
    let mut value = serde_json::to_value(&*ctx.info).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("ca_pem".into(), json!(*ctx.ca_pem));
    }
    ok(value)
}

async fn ca_route(State(ctx): State<Ctx>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        (*ctx.ca_pem).clone(),
    )
        .into_response()
}

async fn seed_demo(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        redirect_uris: Option<Vec<String>>,
        #[serde(default)]
        rotation: Option<bool>,
        #[serde(default)]
        kind: Option<AppKind>,
    }
    let req: Req = body(&bytes)?;
    let defaults = DemoOptions::default();
    let options = DemoOptions {
        redirect_uris: req.redirect_uris.unwrap_or(defaults.redirect_uris),
        rotation: req.rotation.unwrap_or(defaults.rotation),
        kind: req.kind.unwrap_or(defaults.kind),
    };
    ok(ctx.control.seed_demo_with(options)?)
}

async fn list_orgs(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.orgs())
}

async fn create_org(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    ok(ctx.control.create_org(body::<OrgSpec>(&bytes)?)?)
}

async fn get_org(State(ctx): State<Ctx>, Path(org): Path<String>) -> ApiResult {
    ok(ctx.control.org(&org)?)
}

async fn refresh_sandbox(State(ctx): State<Ctx>, Path(org): Path<String>) -> ApiResult {
    ok(ctx.control.refresh_sandbox(&org)?)
}

#[derive(Deserialize)]
struct NameReq {
    name: String,
}

async fn set_my_domain(State(ctx): State<Ctx>, Path(org): Path<String>, bytes: Bytes) -> ApiResult {
    let req: NameReq = body(&bytes)?;
    ok(ctx.control.set_my_domain(&org, &req.name)?)
}

async fn list_users(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.users())
}

async fn create_user(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    ok(ctx.control.create_user(body::<UserSpec>(&bytes)?)?)
}

async fn get_user(State(ctx): State<Ctx>, Path(user): Path<String>) -> ApiResult {
    ok(ctx.control.user(&user)?)
}

async fn deactivate(State(ctx): State<Ctx>, Path(user): Path<String>) -> ApiResult {
    ctx.control.deactivate_user(&user)?;
    done()
}

async fn reactivate(State(ctx): State<Ctx>, Path(user): Path<String>) -> ApiResult {
    ctx.control.reactivate_user(&user)?;
    done()
}

async fn set_password(State(ctx): State<Ctx>, Path(user): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        password: String,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_user_password(&user, &req.password)?;
    done()
}

async fn approve_uninstalled(
    State(ctx): State<Ctx>,
    Path(user): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        allowed: bool,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_approve_uninstalled(&user, req.allowed)?;
    done()
}

#[derive(Deserialize, Default)]
struct AppFilter {
    #[serde(default)]
    app: Option<String>,
}

async fn revoke_user_tokens(
    State(ctx): State<Ctx>,
    Path(user): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let req: AppFilter = body(&bytes)?;
    let revoked = ctx.control.revoke_user_tokens(&user, req.app.as_deref())?;
    ok(json!({ "revoked_grants": revoked }))
}

async fn valid_refresh_tokens(
    State(ctx): State<Ctx>,
    Path(user): Path<String>,
    Query(filter): Query<AppFilter>,
) -> ApiResult {
    ok(ctx
        .control
        .valid_refresh_tokens(&user, filter.app.as_deref())?)
}

async fn list_apps(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.apps())
}

async fn create_app(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    ok(ctx.control.create_app(body::<AppSpec>(&bytes)?)?)
}

async fn get_app(State(ctx): State<Ctx>, Path(app): Path<String>) -> ApiResult {
    ok(ctx.control.app(&app)?)
}

#[derive(Deserialize)]
struct OrgReq {
    org: String,
}

async fn install(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    let req: OrgReq = body(&bytes)?;
    ctx.control.install_app(&app, &req.org)?;
    done()
}

async fn uninstall(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    let req: OrgReq = body(&bytes)?;
    ctx.control.uninstall_app(&app, &req.org)?;
    done()
}

async fn block(State(ctx): State<Ctx>, Path(app): Path<String>) -> ApiResult {
    ctx.control.block_app(&app)?;
    done()
}

async fn unblock(State(ctx): State<Ctx>, Path(app): Path<String>) -> ApiResult {
    ctx.control.unblock_app(&app)?;
    done()
}

async fn rotation(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        enabled: bool,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_rotation(&app, req.enabled)?;
    done()
}

async fn refresh_policy(
    State(ctx): State<Ctx>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let policy: RefreshTokenPolicy = body(&bytes)?;
    ctx.control.set_refresh_token_policy(&app, policy)?;
    done()
}

#[derive(Deserialize)]
struct SecondsReq {
    seconds: u64,
}

async fn session_timeout(
    State(ctx): State<Ctx>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let req: SecondsReq = body(&bytes)?;
    ctx.control
        .set_session_timeout(&app, Duration::from_secs(req.seconds))?;
    done()
}

async fn permitted_users(
    State(ctx): State<Ctx>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        permitted_users: PermittedUsers,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_permitted_users(&app, req.permitted_users)?;
    done()
}

async fn pre_authorize(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        user: String,
        #[serde(default = "yes")]
        authorized: bool,
    }
    fn yes() -> bool {
        true
    }
    let req: Req = body(&bytes)?;
    ctx.control
        .set_pre_authorized(&app, &req.user, req.authorized)?;
    done()
}

#[derive(Deserialize)]
struct PermissionSetReq {
    name: String,
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

async fn app_permission_set(
    State(ctx): State<Ctx>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let req: PermissionSetReq = body(&bytes)?;
    ctx.control
        .set_app_permission_set(&app, &req.name, req.on)?;
    done()
}

async fn user_permission_set(
    State(ctx): State<Ctx>,
    Path(user): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let req: PermissionSetReq = body(&bytes)?;
    ctx.control
        .set_user_permission_set(&user, &req.name, req.on)?;
    done()
}

async fn require_secret(
    State(ctx): State<Ctx>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        web_server: bool,
        refresh: bool,
    }
    let req: Req = body(&bytes)?;
    ctx.control
        .set_require_secret(&app, req.web_server, req.refresh)?;
    done()
}

async fn require_pkce(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        required: bool,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_require_pkce(&app, req.required)?;
    done()
}

async fn revoke_app_tokens(State(ctx): State<Ctx>, Path(app): Path<String>) -> ApiResult {
    let revoked = ctx.control.revoke_app_tokens(&app)?;
    ok(json!({ "revoked_grants": revoked }))
}

async fn jwt_key(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        pem: Option<String>,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_jwt_public_key(&app, req.pem.as_deref())?;
    done()
}

async fn jwt_test_key(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        user: String,
    }
    let req: Req = body(&bytes)?;
    ok(ctx.control.enable_jwt(&app, &req.user)?)
}

async fn run_as(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        user: Option<String>,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_run_as(&app, req.user.as_deref())?;
    done()
}

async fn redirect_uris(State(ctx): State<Ctx>, Path(app): Path<String>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        redirect_uris: Vec<String>,
    }
    let req: Req = body(&bytes)?;
    ctx.control.set_redirect_uris(&app, req.redirect_uris)?;
    done()
}

async fn rotate_secret(State(ctx): State<Ctx>, Path(app): Path<String>) -> ApiResult {
    let secret = ctx.control.rotate_client_secret(&app)?;
    ok(json!({ "client_secret": secret }))
}

async fn mint(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    #[derive(Deserialize)]
    struct Req {
        app: String,
        user: String,
        #[serde(default)]
        scope: Option<String>,
    }
    let req: Req = body(&bytes)?;
    ok(ctx
        .control
        .mint_tokens_with_scope(&req.app, &req.user, req.scope.as_deref())?)
}

#[derive(Deserialize)]
struct TokenReq {
    token: String,
}

async fn check_token(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    let req: TokenReq = body(&bytes)?;
    ok(json!({ "valid": ctx.control.access_token_valid(&req.token) }))
}

async fn revoke_refresh_token(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    let req: TokenReq = body(&bytes)?;
    ctx.control.revoke_refresh_token(&req.token)?;
    done()
}

async fn expire_sessions(State(ctx): State<Ctx>) -> ApiResult {
    ok(json!({ "expired_sessions": ctx.control.expire_all_sessions() }))
}

fn clock_body(ctx: &Ctx) -> serde_json::Value {
    let now = ctx
        .control
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "now_ms": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        "offset_secs": ctx.control.clock_offset().as_secs(),
    })
}

async fn clock(State(ctx): State<Ctx>) -> ApiResult {
    ok(clock_body(&ctx))
}

async fn advance_clock(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    let req: SecondsReq = body(&bytes)?;
    ctx.control.advance_clock(Duration::from_secs(req.seconds));
    ok(clock_body(&ctx))
}

async fn list_faults(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.faults())
}

async fn add_fault(State(ctx): State<Ctx>, bytes: Bytes) -> ApiResult {
    let fault: Fault = body(&bytes)?;
    ok(json!({ "id": ctx.control.inject_fault(fault) }))
}

async fn clear_faults(State(ctx): State<Ctx>) -> ApiResult {
    ctx.control.clear_faults();
    done()
}

async fn remove_fault(State(ctx): State<Ctx>, Path(id): Path<u64>) -> ApiResult {
    ok(json!({ "removed": ctx.control.remove_fault(id) }))
}

async fn calls(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.call_counts())
}

async fn reset_calls(State(ctx): State<Ctx>) -> ApiResult {
    ctx.control.reset_call_counts();
    done()
}

async fn proxy_connects(State(ctx): State<Ctx>) -> ApiResult {
    ok(ctx.control.proxy_connects())
}

async fn clear_proxy_connects(State(ctx): State<Ctx>) -> ApiResult {
    ctx.control.clear_proxy_connects();
    done()
}
