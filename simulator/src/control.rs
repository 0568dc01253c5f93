//! The control surface: everything a test or the demo does to the simulated Salesforce
//! (seed data, revoke, expire, advance the clock, inject faults, read counters, mint
//! tokens). The same operations back the HTTP routes in `control_http`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::faults::{ActiveFault, CallCounts, Fault, FaultTable};
use crate::jwt::JwtKeyPair;
use crate::spec::{
    AppInfo, AppKind, AppSpec, OrgInfo, OrgSpec, PermittedUsers, RefreshTokenPolicy, TokenResponse,
    UserInfo, UserSpec,
};
use crate::state::SimState;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    state: Mutex<SimState>,
    faults: Mutex<FaultTable>,
    counts: Mutex<CallCounts>,
    proxy_log: Mutex<Vec<String>>,
    in_flight: Mutex<HashSet<String>>,
}

/// State shared by the listeners and the control surface.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Inner>);

impl Shared {
    pub fn new() -> Self {
        Shared(Arc::new(Inner {
            state: Mutex::new(SimState::new()),
            faults: Mutex::new(FaultTable::default()),
            counts: Mutex::new(CallCounts::default()),
            proxy_log: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashSet::new()),
        }))
    }

    pub fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.0.state)
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultTable> {
        lock(&self.0.faults)
    }

    pub fn counts(&self) -> MutexGuard<'_, CallCounts> {
        lock(&self.0.counts)
    }

    pub fn proxy_log(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.0.proxy_log)
    }

    /// Marks a refresh token as being processed; `None` when it already is.
    pub fn begin_processing(&self, refresh_token: &str) -> Option<InFlight> {
        lock(&self.0.in_flight)
            .insert(refresh_token.to_string())
            .then(|| InFlight {
                shared: self.clone(),
                token: refresh_token.to_string(),
            })
    }
}

/// A refresh token being processed; released when dropped.
pub(crate) struct InFlight {
    shared: Shared,
    token: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.shared.0.in_flight).remove(&self.token);
    }
}

/// Username and password of the demo users.
pub const DEMO_PASSWORD: &str = "Demo-Passw0rd!";

/// What [`Control::seed_demo_with`] creates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoOptions {
    /// Callback URLs of the demo app.
    pub redirect_uris: Vec<String>,
    /// Refresh token rotation on the demo app.
    pub rotation: bool,
    /// Connected App (installed in both orgs, users pre-authorized by name) or External
    /// Client App (local, no installation; users pre-authorized through the permission set
    /// [`DEMO_PERMISSION_SET`], which both demo users hold; PKCE and secrets required).
    #[serde(default)]
    pub kind: AppKind,
}

/// The permission set the demo users hold and an External Client App demo pre-authorizes.
pub const DEMO_PERMISSION_SET: &str = "Salesforce_Backup_Integration";

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            redirect_uris: vec![
                "http://localhost:8080/oauth/callback".to_string(),
                "http://127.0.0.1:8080/oauth/callback".to_string(),
            ],
            rotation: true,
            kind: AppKind::ConnectedApp,
        }
    }
}

/// The demo data: org `acme` (production) and sandbox `acme--uat`, one admin user in
/// each, and the confidential app `sforg-operator` installed in both, with the embedded
/// JWT test key registered, both users pre-authorized, and the production admin as
/// client credentials run-as user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSeed {
    pub org: OrgInfo,
    pub sandbox: OrgInfo,
    pub user: UserInfo,
    pub sandbox_user: UserInfo,
    pub password: String,
    pub app: AppInfo,
}

/// Handle on the simulated Salesforce. Cheap to clone; every method is synchronous.
#[derive(Clone)]
pub struct Control {
    pub(crate) shared: Shared,
}

impl Control {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        f(&mut self.shared.state())
    }

    // ----- seed data -----

    pub fn create_org(&self, spec: OrgSpec) -> Result<OrgInfo, SimError> {
        self.with_state(|s| s.create_org(&spec))
    }

    pub fn create_user(&self, spec: UserSpec) -> Result<UserInfo, SimError> {
        self.with_state(|s| s.create_user(&spec))
    }

    pub fn create_app(&self, spec: AppSpec) -> Result<AppInfo, SimError> {
        self.with_state(|s| s.create_app(&spec))
    }

    /// [`Control::seed_demo_with`] with the default options.
    pub fn seed_demo(&self) -> Result<DemoSeed, SimError> {
        self.seed_demo_with(DemoOptions::default())
    }

    /// Creates the demo org, sandbox, users and app (see [`DemoSeed`]).
    pub fn seed_demo_with(&self, options: DemoOptions) -> Result<DemoSeed, SimError> {
        let org = self.create_org(OrgSpec::production("acme"))?;
        let sandbox = self.create_org(OrgSpec::sandbox("acme", "uat"))?;
        let user = self.create_user(
            UserSpec::new(&org.label, "admin@acme.example", DEMO_PASSWORD)
                .name("Ada Admin")
                .permission_set(DEMO_PERMISSION_SET),
        )?;
        let sandbox_user = self.create_user(
            UserSpec::new(&sandbox.label, "admin@acme.example.uat", DEMO_PASSWORD)
                .name("Ada Admin")
                .email("admin@acme.example")
                .permission_set(DEMO_PERMISSION_SET),
        )?;
        let spec = match options.kind {
            AppKind::ConnectedApp => AppSpec::confidential("sforg-operator")
                .install_in(&org.label)
                .install_in(&sandbox.label)
                .pre_authorize(&user.username)
                .pre_authorize(&sandbox_user.username),
            AppKind::ExternalClientApp => {
                AppSpec::external_client_app("sforg-operator").permission_set(DEMO_PERMISSION_SET)
            }
        };
        let mut spec = spec
            .rotation(options.rotation)
            .jwt_public_key_pem(JwtKeyPair::test_key().public_key_pem)
            .run_as(&user.username);
        spec.redirect_uris = options.redirect_uris;
        let app = self.create_app(spec)?;
        Ok(DemoSeed {
            org,
            sandbox,
            user,
            sandbox_user,
            password: DEMO_PASSWORD.to_string(),
            app,
        })
    }

    // ----- views -----

    pub fn orgs(&self) -> Vec<OrgInfo> {
        self.with_state(|s| s.orgs.keys().filter_map(|k| s.org_info(*k)).collect())
    }

    /// An org by label (`acme`, `acme--uat`), id or My Domain host.
    pub fn org(&self, org: &str) -> Result<OrgInfo, SimError> {
        self.with_state(|s| {
            let key = s.org_key(org)?;
            s.org_info(key)
                .ok_or_else(|| SimError::UnknownOrg(org.to_string()))
        })
    }

    pub fn users(&self) -> Vec<UserInfo> {
        self.with_state(|s| s.users.keys().filter_map(|id| s.user_info(id)).collect())
    }

    /// A user by username or id.
    pub fn user(&self, user: &str) -> Result<UserInfo, SimError> {
        self.with_state(|s| {
            let id = s.user_id(user)?;
            s.user_info(&id)
                .ok_or_else(|| SimError::UnknownUser(user.to_string()))
        })
    }

    pub fn apps(&self) -> Vec<AppInfo> {
        self.with_state(|s| s.apps.keys().filter_map(|id| s.app_info(id)).collect())
    }

    /// An app by name or consumer key.
    pub fn app(&self, app: &str) -> Result<AppInfo, SimError> {
        self.with_state(|s| {
            let id = s.app_id(app)?;
            s.app_info(&id)
                .ok_or_else(|| SimError::UnknownApp(app.to_string()))
        })
    }

    // ----- tokens -----

    /// Issues tokens for a user as if the web server flow had just completed (the user's
    /// approval is recorded). Same body as the token endpoint; a refresh token is included
    /// when the app has the `refresh_token` or `offline_access` scope.
    pub fn mint_tokens(&self, app: &str, user: &str) -> Result<TokenResponse, SimError> {
        self.mint_tokens_with_scope(app, user, None)
    }

    /// [`Control::mint_tokens`] with an explicit space-separated scope.
    pub fn mint_tokens_with_scope(
        &self,
        app: &str,
        user: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, SimError> {
        self.with_state(|s| {
            let client_id = s.app_id(app)?;
            let user_id = s.user_id(user)?;
            let scope = match scope {
                Some(scope) => scope.to_string(),
                None => s
                    .apps
                    .get(&client_id)
                    .map(|a| a.scopes.join(" "))
                    .unwrap_or_default(),
            };
            let with_refresh = scope
                .split_whitespace()
                .any(|x| x == "refresh_token" || x == "offline_access");
            s.consents.insert((user_id.clone(), client_id.clone()));
            Ok(s.issue(&user_id, &client_id, &scope, with_refresh))
        })
    }

    /// Refresh tokens that would be accepted now, oldest grant first.
    pub fn valid_refresh_tokens(
        &self,
        user: &str,
        app: Option<&str>,
    ) -> Result<Vec<String>, SimError> {
        self.with_state(|s| s.valid_refresh_tokens(user, app))
    }

    /// Whether an access token would be accepted now (does not count as activity).
    pub fn access_token_valid(&self, token: &str) -> bool {
        self.with_state(|s| {
            let now = s.now();
            s.access_tokens
                .get(token)
                .is_some_and(|t| s.access_token_alive(t, now))
        })
    }

    /// Revokes all grants and sessions of a user (for one app, or all apps) and forgets
    /// the user's approval. Returns how many grants were revoked.
    pub fn revoke_user_tokens(&self, user: &str, app: Option<&str>) -> Result<usize, SimError> {
        self.with_state(|s| s.revoke_user_tokens(user, app))
    }

    /// Revokes every token of an app for every user (the External Client Apps OAuth Usage
    /// page's app-wide revoke). Returns how many grants were revoked.
    pub fn revoke_app_tokens(&self, app: &str) -> Result<usize, SimError> {
        self.with_state(|s| s.revoke_app_tokens(app))
    }

    /// Revokes the grant behind one refresh token (and its access tokens).
    pub fn revoke_refresh_token(&self, token: &str) -> Result<(), SimError> {
        self.with_state(|s| s.revoke_refresh_token(token))
    }

    /// Kills every access token; refresh tokens keep working. Returns how many died.
    pub fn expire_all_sessions(&self) -> usize {
        self.with_state(SimState::expire_all_sessions)
    }

    // ----- clock -----

    /// Moves the simulator's clock forward (sessions, codes and refresh policies follow it).
    pub fn advance_clock(&self, by: Duration) {
        self.with_state(|s| s.advance_clock(by));
    }

    /// The simulator's current time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.with_state(|s| s.now()))
    }

    /// How far the clock has been advanced.
    pub fn clock_offset(&self) -> Duration {
        self.with_state(|s| s.clock_offset())
    }

    // ----- users -----

    pub fn set_user_active(&self, user: &str, active: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_user_active(user, active))
    }

    pub fn deactivate_user(&self, user: &str) -> Result<(), SimError> {
        self.set_user_active(user, false)
    }

    pub fn reactivate_user(&self, user: &str) -> Result<(), SimError> {
        self.set_user_active(user, true)
    }

    pub fn set_user_password(&self, user: &str, password: &str) -> Result<(), SimError> {
        self.with_state(|s| s.set_user_password(user, password))
    }

    /// Grants or removes "Approve Uninstalled Connected Apps".
    pub fn set_approve_uninstalled(&self, user: &str, allowed: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_approve_uninstalled(user, allowed))
    }

    // ----- apps -----

    pub fn install_app(&self, app: &str, org: &str) -> Result<(), SimError> {
        self.with_state(|s| s.set_app_installed(app, org, true))
    }

    pub fn uninstall_app(&self, app: &str, org: &str) -> Result<(), SimError> {
        self.with_state(|s| s.set_app_installed(app, org, false))
    }

    pub fn set_app_blocked(&self, app: &str, blocked: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_app_blocked(app, blocked))
    }

    pub fn block_app(&self, app: &str) -> Result<(), SimError> {
        self.set_app_blocked(app, true)
    }

    pub fn unblock_app(&self, app: &str) -> Result<(), SimError> {
        self.set_app_blocked(app, false)
    }

    pub fn set_rotation(&self, app: &str, enabled: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_rotation(app, enabled))
    }

    pub fn set_refresh_token_policy(
        &self,
        app: &str,
        policy: RefreshTokenPolicy,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_refresh_policy(app, policy))
    }

    pub fn set_session_timeout(&self, app: &str, timeout: Duration) -> Result<(), SimError> {
        self.with_state(|s| s.set_session_timeout(app, timeout))
    }

    pub fn set_permitted_users(
        &self,
        app: &str,
        permitted: PermittedUsers,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_permitted_users(app, permitted))
    }

    pub fn set_pre_authorized(
        &self,
        app: &str,
        user: &str,
        authorized: bool,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_pre_authorized(app, user, authorized))
    }

    /// The settings "Require secret for Web Server Flow" and "Require secret for Refresh
    /// Token Flow".
    pub fn set_require_secret(
        &self,
        app: &str,
        web_server: bool,
        refresh: bool,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_require_secret(app, web_server, refresh))
    }

    /// The setting "Require Proof Key for Code Exchange (PKCE)".
    pub fn set_require_pkce(&self, app: &str, required: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_require_pkce(app, required))
    }

    /// Selects or clears a permission set in the app's Permitted Users policy.
    pub fn set_app_permission_set(
        &self,
        app: &str,
        permission_set: &str,
        selected: bool,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_app_permission_set(app, permission_set, selected))
    }

    /// Assigns or removes a permission set of a user.
    pub fn set_user_permission_set(
        &self,
        user: &str,
        permission_set: &str,
        assigned: bool,
    ) -> Result<(), SimError> {
        self.with_state(|s| s.set_user_permission_set(user, permission_set, assigned))
    }

    /// The ECA setting that limits refresh tokens to 30 days without use.
    pub fn set_idle_refresh_limit(&self, app: &str, on: bool) -> Result<(), SimError> {
        self.with_state(|s| s.set_idle_refresh_limit(app, on))
    }

    /// Registers (or with `None` removes) the RSA public key or certificate PEM used to
    /// verify JWT bearer assertions.
    pub fn set_jwt_public_key(&self, app: &str, pem: Option<&str>) -> Result<(), SimError> {
        self.with_state(|s| s.set_jwt_key(app, pem.map(str::to_string)))
    }

    /// Registers the embedded test key for `app`, pre-authorizes `user`, and returns the
    /// key pair to sign assertions with.
    pub fn enable_jwt(&self, app: &str, user: &str) -> Result<JwtKeyPair, SimError> {
        let key = JwtKeyPair::test_key();
        self.with_state(|s| {
            s.set_jwt_key(app, Some(key.public_key_pem.clone()))?;
            s.set_pre_authorized(app, user, true)
        })?;
        Ok(key)
    }

    /// Sets (or with `None` clears) the client credentials run-as user.
    pub fn set_run_as(&self, app: &str, user: Option<&str>) -> Result<(), SimError> {
        self.with_state(|s| s.set_run_as(app, user))
    }

    pub fn set_redirect_uris(&self, app: &str, uris: Vec<String>) -> Result<(), SimError> {
        self.with_state(|s| s.set_redirect_uris(app, uris))
    }

    /// Gives a confidential app a new consumer secret and returns it.
    pub fn rotate_client_secret(&self, app: &str) -> Result<String, SimError> {
        self.with_state(|s| s.rotate_client_secret(app))
    }

    // ----- orgs -----

    /// Refreshes a sandbox: new org id, every grant and session of the org dies.
    pub fn refresh_sandbox(&self, org: &str) -> Result<OrgInfo, SimError> {
        self.with_state(|s| s.refresh_sandbox(org))
    }

    /// Renames the org's My Domain: later token responses carry the new `instance_url`.
    pub fn set_my_domain(&self, org: &str, name: &str) -> Result<OrgInfo, SimError> {
        self.with_state(|s| s.set_my_domain(org, name))
    }

    // ----- faults, counters, proxy log -----

    /// Adds a fault rule; returns its id.
    pub fn inject_fault(&self, fault: Fault) -> u64 {
        self.shared.faults().add(fault)
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.faults().remove(id)
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    pub fn faults(&self) -> Vec<ActiveFault> {
        self.shared.faults().list()
    }

    pub fn call_counts(&self) -> CallCounts {
        self.shared.counts().clone()
    }

    pub fn reset_call_counts(&self) {
        *self.shared.counts() = CallCounts::default();
    }

    /// Hosts the proxy was asked to CONNECT to, in order (lowercase, without port).
    pub fn proxy_connects(&self) -> Vec<String> {
        self.shared.proxy_log().clone()
    }

    pub fn clear_proxy_connects(&self) {
        self.shared.proxy_log().clear();
    }
}
