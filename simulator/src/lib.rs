//! A Salesforce OAuth 2.0 simulator for tests and demos of the operator.
//!
//! It answers as `login.salesforce.com`, `test.salesforce.com` and every My Domain host:
//! clients reach it through its HTTP CONNECT proxy and trust its CA, so the code under
//! test keeps the real production URLs. It follows Salesforce's documented wire
//! behaviour (token responses, error bodies, status codes) and lets tests change the
//! world under the client: revoke, expire, advance the clock, inject faults.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sforg_simulator::SimError> {
//! let sim = sforg_simulator::Simulator::start().await?;
//! let demo = sim.seed_demo()?;
//! let tokens = sim.mint_tokens(&demo.app.client_id, &demo.user.username)?;
//! // reqwest::Client::builder()
//! //     .proxy(reqwest::Proxy::https(sim.proxy_url())?)
//! //     .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes())?)
//! # let _ = tokens;
//! # Ok(()) }
//! ```
//!
//! It must never be a dependency of the operator's production code.

mod authorize;
mod control;
mod control_http;
mod error;
mod faults;
mod grants;
mod host;
pub mod html_form;
mod ids;
mod jwt;
mod oauth;
mod pages;
mod proxy;
mod resources;
mod router;
mod server;
mod sim;
mod spec;
mod state;
mod tls;

pub use control::{Control, DEMO_PASSWORD, DEMO_PERMISSION_SET, DemoOptions, DemoSeed};
pub use error::{OAuthError, SimError, oauth_errors};
pub use faults::{ActiveFault, CallCounts, Endpoint, Fault, FaultKind};
pub use grants::{
    GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_REFRESH_TOKEN,
    pkce_challenge,
};
pub use host::SfHost;
pub use jwt::{AssertionClaims, EXP_LEEWAY, JwtKeyPair};
pub use sim::{ReadyInfo, SimConfig, Simulator};
pub use spec::{
    AppInfo, AppKind, AppSpec, DEFAULT_SCOPES, DEFAULT_SESSION_TIMEOUT, ECA_IDLE_REFRESH_LIMIT,
    OrgInfo, OrgKind, OrgSpec, PermittedUsers, RefreshTokenPolicy, TokenResponse, UserInfo,
    UserSpec,
};
pub use state::{CODE_LIFETIME, MAX_GRANTS_PER_USER_APP};
pub use tls::SERVER_NAMES;
