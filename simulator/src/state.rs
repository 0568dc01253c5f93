//! The simulated Salesforce: orgs, users, connected apps, approvals, grants and tokens,
//! plus the simulator's adjustable clock. Plain synchronous data behind one mutex; the
//! OAuth rules that act on it live in `grants`, the HTTP layers only translate.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::SimError;
use crate::ids;
use crate::spec::{
    AppInfo, AppKind, AppSpec, DEFAULT_SCOPES, ECA_IDLE_REFRESH_LIMIT, OrgInfo, OrgKind, OrgSpec,
    PermittedUsers, RefreshTokenPolicy, UserInfo, UserSpec,
};

/// Milliseconds since the epoch on the simulator's clock.
pub type Millis = u64;

/// Most approvals (grants) one user keeps per app; one more revokes the oldest.
pub const MAX_GRANTS_PER_USER_APP: usize = 5;
/// Life of an authorization code.
pub const CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Life of the hidden ticket that links the login page to the consent page.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct OrgKey(u64);

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub label: String,
    pub id: String,
    pub kind: OrgKind,
    pub my_domain_host: String,
}

impl Org {
    pub fn instance_url(&self) -> String {
        format!("https://{}", self.my_domain_host)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    pub username: String,
    pub password: String,
    pub name: String,
    pub email: String,
    pub org: OrgKey,
    pub active: bool,
    pub approve_uninstalled_apps: bool,
    pub permission_sets: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub name: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub installed_in: BTreeSet<OrgKey>,
    pub blocked: bool,
    pub rotation: bool,
    pub refresh_token_policy: RefreshTokenPolicy,
    pub session_timeout: Duration,
    pub permitted_users: PermittedUsers,
    pub pre_authorized: BTreeSet<String>,
    pub jwt_public_key_pem: Option<String>,
    pub run_as: Option<String>,
    pub require_pkce: bool,
    pub kind: AppKind,
    pub require_secret_for_web_server: bool,
    pub require_secret_for_refresh: bool,
    pub permission_sets: BTreeSet<String>,
    pub idle_refresh_limit: bool,
}

impl App {
    /// Whether the Permitted Users policy "Admin approved users are pre-authorized" lets
    /// this user in: by name (a profile, as Connected Apps do it) or, for either kind of
    /// app, by one of the user's permission sets selected in the app's policies.
    pub fn pre_authorizes(&self, user: &User) -> bool {
        self.pre_authorized.contains(&user.id)
            || user
                .permission_sets
                .iter()
                .any(|p| self.permission_sets.contains(p))
    }

    /// Whether the org-level installation rule stops this user: only Connected Apps are
    /// installed per org (External Client Apps are local to their org, or come from a
    /// package, which installs them).
    pub fn blocked_as_uninstalled(&self, user: &User) -> bool {
        self.kind == AppKind::ConnectedApp
            && !self.installed_in.contains(&user.org)
            && !user.approve_uninstalled_apps
    }
}

/// One approval: what a refresh token stands for. Rotation replaces its refresh token.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub user_id: String,
    pub client_id: String,
    pub org_id: String,
    pub scope: String,
    pub created_at: Millis,
    pub last_used: Millis,
    pub refresh_token: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshState {
    Current,
    RotatedOut,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub user_id: String,
    pub client_id: String,
    pub org_id: String,
    pub grant: Option<u64>,
    pub scope: String,
    pub issued_at: Millis,
    pub last_used: Millis,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub issued_at: Millis,
}

#[derive(Debug, Clone)]
pub(crate) struct LoginTicket {
    pub user_id: String,
    pub client_id: String,
    pub issued_at: Millis,
}

#[derive(Debug)]
pub(crate) struct SimState {
    clock_offset: Duration,
    next_org_key: u64,
    next_grant_id: u64,
    pub orgs: BTreeMap<OrgKey, Org>,
    pub users: BTreeMap<String, User>,
    /// User ids by ASCII-lowercased username (usernames never change), so looking a user up
    /// by name does not scan every user: a 100k-org bench creates 100k users.
    usernames: HashMap<String, String>,
    pub apps: BTreeMap<String, App>,
    pub grants: HashMap<u64, Grant>,
    /// Grant ids by user id, for the per-user-and-app grant limit; ids of grants revoked since
    /// are skipped (and dropped) when read.
    pub grants_of_user: HashMap<String, Vec<u64>>,
    pub refresh_index: HashMap<String, (u64, RefreshState)>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub codes: HashMap<String, AuthCode>,
    pub tickets: HashMap<String, LoginTicket>,
    /// (user id, client id) pairs whose user clicked Allow.
    pub consents: HashSet<(String, String)>,
    /// Key for the `signature` field of public apps (they have no secret).
    pub signing_key: String,
}

impl Default for SimState {
    fn default() -> Self {
        Self::new()
    }
}

impl SimState {
    pub fn new() -> Self {
        Self {
            clock_offset: Duration::ZERO,
            next_org_key: 1,
            next_grant_id: 1,
            orgs: BTreeMap::new(),
            users: BTreeMap::new(),
            usernames: HashMap::new(),
            apps: BTreeMap::new(),
            grants: HashMap::new(),
            grants_of_user: HashMap::new(),
            refresh_index: HashMap::new(),
            access_tokens: HashMap::new(),
            codes: HashMap::new(),
            tickets: HashMap::new(),
            consents: HashSet::new(),
            signing_key: ids::opaque(48),
        }
    }

    // ----- clock -----

    pub fn now(&self) -> Millis {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        ms(wall + self.clock_offset)
    }

    pub fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    pub fn clock_offset(&self) -> Duration {
        self.clock_offset
    }

    // ----- lookups -----

    pub fn org_key(&self, reference: &str) -> Result<OrgKey, SimError> {
        let r = reference.trim().to_ascii_lowercase();
        self.orgs
            .iter()
            .find(|(_, o)| {
                o.label.eq_ignore_ascii_case(&r)
                    || o.my_domain_host == r
                    || o.id.eq_ignore_ascii_case(reference.trim())
                    || (reference.trim().len() == 15 && o.id.starts_with(reference.trim()))
            })
            .map(|(k, _)| *k)
            .ok_or_else(|| SimError::UnknownOrg(reference.to_string()))
    }

    pub fn org(&self, key: OrgKey) -> Option<&Org> {
        self.orgs.get(&key)
    }

    pub fn org_by_host(&self, host: &str) -> Option<(OrgKey, &Org)> {
        self.orgs
            .iter()
            .find(|(_, o)| o.my_domain_host == host)
            .map(|(k, o)| (*k, o))
    }

    pub fn user_id(&self, reference: &str) -> Result<String, SimError> {
        if self.users.contains_key(reference) {
            return Ok(reference.to_string());
        }
        if let Some(id) = self.usernames.get(&reference.to_ascii_lowercase()) {
            return Ok(id.clone());
        }
        self.users
            .values()
            .find(|u| reference.len() == 15 && u.id.starts_with(reference))
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::UnknownUser(reference.to_string()))
    }

    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.usernames
            .get(&username.to_ascii_lowercase())
            .and_then(|id| self.users.get(id))
    }

    pub fn app_id(&self, reference: &str) -> Result<String, SimError> {
        if self.apps.contains_key(reference) {
            return Ok(reference.to_string());
        }
        self.apps
            .values()
            .find(|a| a.name == reference)
            .map(|a| a.client_id.clone())
            .ok_or_else(|| SimError::UnknownApp(reference.to_string()))
    }

    fn app_mut(&mut self, reference: &str) -> Result<&mut App, SimError> {
        let id = self.app_id(reference)?;
        self.apps.get_mut(&id).ok_or(SimError::UnknownApp(id))
    }

    fn user_mut(&mut self, reference: &str) -> Result<&mut User, SimError> {
        let id = self.user_id(reference)?;
        self.users.get_mut(&id).ok_or(SimError::UnknownUser(id))
    }

    // ----- views -----

    pub fn org_info(&self, key: OrgKey) -> Option<OrgInfo> {
        let o = self.orgs.get(&key)?;
        Some(OrgInfo {
            label: o.label.clone(),
            id: o.id.clone(),
            kind: o.kind.clone(),
            my_domain_host: o.my_domain_host.clone(),
            instance_url: o.instance_url(),
            login_url: o.kind.login_url().to_string(),
        })
    }

    pub fn user_info(&self, id: &str) -> Option<UserInfo> {
        let u = self.users.get(id)?;
        let org = self.orgs.get(&u.org)?;
        Some(UserInfo {
            id: u.id.clone(),
            username: u.username.clone(),
            name: u.name.clone(),
            email: u.email.clone(),
            org_label: org.label.clone(),
            org_id: org.id.clone(),
            active: u.active,
            approve_uninstalled_apps: u.approve_uninstalled_apps,
            permission_sets: u.permission_sets.iter().cloned().collect(),
        })
    }

    pub fn app_info(&self, client_id: &str) -> Option<AppInfo> {
        let a = self.apps.get(client_id)?;
        Some(AppInfo {
            name: a.name.clone(),
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.clone(),
            redirect_uris: a.redirect_uris.clone(),
            scopes: a.scopes.clone(),
            installed_in: a
                .installed_in
                .iter()
                .filter_map(|k| self.orgs.get(k).map(|o| o.label.clone()))
                .collect(),
            blocked: a.blocked,
            rotation: a.rotation,
            refresh_token_policy: a.refresh_token_policy,
            session_timeout: a.session_timeout,
            permitted_users: a.permitted_users,
            pre_authorized: a
                .pre_authorized
                .iter()
                .filter_map(|id| self.users.get(id).map(|u| u.username.clone()))
                .collect(),
            jwt_enabled: a.jwt_public_key_pem.is_some(),
            run_as: a
                .run_as
                .as_ref()
                .and_then(|id| self.users.get(id).map(|u| u.username.clone())),
            require_pkce: a.require_pkce,
            kind: a.kind,
            require_secret_for_web_server: a.require_secret_for_web_server,
            require_secret_for_refresh: a.require_secret_for_refresh,
            permission_sets: a.permission_sets.iter().cloned().collect(),
            idle_refresh_limit: a.idle_refresh_limit,
        })
    }

    // ----- creation -----

    pub fn create_org(&mut self, spec: &OrgSpec) -> Result<OrgInfo, SimError> {
        let label = spec.label();
        if spec.name.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(SimError::Invalid(format!(
                "invalid My Domain name: {label}"
            )));
        }
        if self
            .orgs
            .values()
            .any(|o| o.label.eq_ignore_ascii_case(&label))
        {
            return Err(SimError::AlreadyExists(label));
        }
        let key = OrgKey(self.next_org_key);
        self.next_org_key += 1;
        self.orgs.insert(
            key,
            Org {
                label: label.to_ascii_lowercase(),
                id: ids::salesforce_id("00D"),
                kind: spec.kind.clone(),
                my_domain_host: spec.my_domain_host().to_ascii_lowercase(),
            },
        );
        self.org_info(key).ok_or(SimError::UnknownOrg(label))
    }

    pub fn create_user(&mut self, spec: &UserSpec) -> Result<UserInfo, SimError> {
        let org = self.org_key(&spec.org)?;
        if spec.username.is_empty() {
            return Err(SimError::Invalid("empty username".into()));
        }
        if self.user_by_username(&spec.username).is_some() {
            return Err(SimError::AlreadyExists(spec.username.clone()));
        }
        let id = ids::salesforce_id("005");
        let local = spec
            .username
            .split('@')
            .next()
            .unwrap_or(&spec.username)
            .to_string();
        self.usernames
            .insert(spec.username.to_ascii_lowercase(), id.clone());
        self.users.insert(
            id.clone(),
            User {
                id: id.clone(),
                username: spec.username.clone(),
                password: spec.password.clone(),
                name: spec.name.clone().unwrap_or_else(|| local.clone()),
                email: spec.email.clone().unwrap_or_else(|| spec.username.clone()),
                org,
                active: spec.active,
                approve_uninstalled_apps: spec.approve_uninstalled_apps,
                permission_sets: spec.permission_sets.iter().cloned().collect(),
            },
        );
        self.user_info(&id).ok_or(SimError::UnknownUser(id))
    }

    pub fn create_app(&mut self, spec: &AppSpec) -> Result<AppInfo, SimError> {
        if self.apps.values().any(|a| a.name == spec.name) {
            return Err(SimError::AlreadyExists(spec.name.clone()));
        }
        let client_id = spec.client_id.clone().unwrap_or_else(ids::client_id);
        if self.apps.contains_key(&client_id) {
            return Err(SimError::AlreadyExists(client_id));
        }
        let client_secret = if spec.confidential {
            Some(
                spec.client_secret
                    .clone()
                    .unwrap_or_else(ids::client_secret),
            )
        } else {
            None
        };
        let installed_in = spec
            .installed_in
            .iter()
            .map(|o| self.org_key(o))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let pre_authorized = spec
            .pre_authorized
            .iter()
            .map(|u| self.user_id(u))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let run_as = spec
            .run_as
            .as_deref()
            .map(|u| self.user_id(u))
            .transpose()?;
        if let Some(pem) = &spec.jwt_public_key_pem {
            crate::jwt::check_public_key(pem)?;
        }
        let scopes = if spec.scopes.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()
        } else {
            spec.scopes.clone()
        };
        self.apps.insert(
            client_id.clone(),
            App {
                name: spec.name.clone(),
                client_id: client_id.clone(),
                client_secret,
                redirect_uris: spec.redirect_uris.clone(),
                scopes,
                installed_in,
                blocked: spec.blocked,
                rotation: spec.rotation,
                refresh_token_policy: spec.refresh_token_policy,
                session_timeout: spec.session_timeout,
                permitted_users: spec.permitted_users,
                pre_authorized,
                jwt_public_key_pem: spec.jwt_public_key_pem.clone(),
                run_as,
                require_pkce: spec.require_pkce,
                kind: spec.kind,
                require_secret_for_web_server: spec.require_secret_for_web_server,
                require_secret_for_refresh: spec.require_secret_for_refresh,
                permission_sets: spec.permission_sets.iter().cloned().collect(),
                idle_refresh_limit: spec.idle_refresh_limit,
            },
        );
        self.app_info(&client_id)
            .ok_or(SimError::UnknownApp(client_id))
    }

    // ----- administrative changes -----

    pub fn set_user_active(&mut self, user: &str, active: bool) -> Result<(), SimError> {
        self.user_mut(user)?.active = active;
        Ok(())
    }

    pub fn set_user_password(&mut self, user: &str, password: &str) -> Result<(), SimError> {
        self.user_mut(user)?.password = password.to_string();
        Ok(())
    }

    pub fn set_approve_uninstalled(&mut self, user: &str, allowed: bool) -> Result<(), SimError> {
        self.user_mut(user)?.approve_uninstalled_apps = allowed;
        Ok(())
    }

    pub fn set_app_installed(
        &mut self,
        app: &str,
        org: &str,
        installed: bool,
    ) -> Result<(), SimError> {
        let key = self.org_key(org)?;
        let app = self.app_mut(app)?;
        if installed {
            app.installed_in.insert(key);
        } else {
            app.installed_in.remove(&key);
        }
        Ok(())
    }

    pub fn set_app_blocked(&mut self, app: &str, blocked: bool) -> Result<(), SimError> {
        self.app_mut(app)?.blocked = blocked;
        Ok(())
    }

    pub fn set_rotation(&mut self, app: &str, enabled: bool) -> Result<(), SimError> {
        self.app_mut(app)?.rotation = enabled;
        Ok(())
    }

    pub fn set_refresh_policy(
        &mut self,
        app: &str,
        policy: RefreshTokenPolicy,
    ) -> Result<(), SimError> {
        self.app_mut(app)?.refresh_token_policy = policy;
        Ok(())
    }

    pub fn set_session_timeout(&mut self, app: &str, timeout: Duration) -> Result<(), SimError> {
        self.app_mut(app)?.session_timeout = timeout;
        Ok(())
    }

    pub fn set_permitted_users(
        &mut self,
        app: &str,
        permitted: PermittedUsers,
    ) -> Result<(), SimError> {
        self.app_mut(app)?.permitted_users = permitted;
        Ok(())
    }

    pub fn set_pre_authorized(
        &mut self,
        app: &str,
        user: &str,
        authorized: bool,
    ) -> Result<(), SimError> {
        let user_id = self.user_id(user)?;
        let app = self.app_mut(app)?;
        if authorized {
            app.pre_authorized.insert(user_id);
        } else {
            app.pre_authorized.remove(&user_id);
        }
        Ok(())
    }

    /// Selects (or clears) a permission set in the app's Permitted Users policy.
    pub fn set_app_permission_set(
        &mut self,
        app: &str,
        permission_set: &str,
        selected: bool,
    ) -> Result<(), SimError> {
        let app = self.app_mut(app)?;
        if selected {
            app.permission_sets.insert(permission_set.to_string());
        } else {
            app.permission_sets.remove(permission_set);
        }
        Ok(())
    }

    /// Assigns (or removes) a permission set to a user.
    pub fn set_user_permission_set(
        &mut self,
        user: &str,
        permission_set: &str,
        assigned: bool,
    ) -> Result<(), SimError> {
        let user = self.user_mut(user)?;
        if assigned {
            user.permission_sets.insert(permission_set.to_string());
        } else {
            user.permission_sets.remove(permission_set);
        }
        Ok(())
    }

    /// The ECA settings "Require secret for Web Server Flow" and "... for Refresh Token Flow".
    pub fn set_require_secret(
        &mut self,
        app: &str,
        web_server: bool,
        refresh: bool,
    ) -> Result<(), SimError> {
        let app = self.app_mut(app)?;
        app.require_secret_for_web_server = web_server;
        app.require_secret_for_refresh = refresh;
        Ok(())
    }

    pub fn set_require_pkce(&mut self, app: &str, required: bool) -> Result<(), SimError> {
        self.app_mut(app)?.require_pkce = required;
        Ok(())
    }

    pub fn set_idle_refresh_limit(&mut self, app: &str, on: bool) -> Result<(), SimError> {
        self.app_mut(app)?.idle_refresh_limit = on;
        Ok(())
    }

    pub fn set_jwt_key(&mut self, app: &str, pem: Option<String>) -> Result<(), SimError> {
        if let Some(pem) = &pem {
            crate::jwt::check_public_key(pem)?;
        }
        self.app_mut(app)?.jwt_public_key_pem = pem;
        Ok(())
    }

    pub fn set_run_as(&mut self, app: &str, user: Option<&str>) -> Result<(), SimError> {
        let user_id = user.map(|u| self.user_id(u)).transpose()?;
        self.app_mut(app)?.run_as = user_id;
        Ok(())
    }

    pub fn set_redirect_uris(&mut self, app: &str, uris: Vec<String>) -> Result<(), SimError> {
        self.app_mut(app)?.redirect_uris = uris;
        Ok(())
    }

    pub fn rotate_client_secret(&mut self, app: &str) -> Result<String, SimError> {
        let app = self.app_mut(app)?;
        if app.client_secret.is_none() {
            return Err(SimError::Invalid(format!("{} is a public app", app.name)));
        }
        let secret = ids::client_secret();
        app.client_secret = Some(secret.clone());
        Ok(secret)
    }

    /// Renames the org's My Domain (its instance URL changes; existing tokens stay valid).
    pub fn set_my_domain(&mut self, org: &str, name: &str) -> Result<OrgInfo, SimError> {
        let key = self.org_key(org)?;
        let kind = self
            .orgs
            .get(&key)
            .map(|o| o.kind.clone())
            .ok_or(SimError::UnknownOrg(org.into()))?;
        let spec = OrgSpec {
            name: name.to_string(),
            kind,
        };
        let host = spec.my_domain_host().to_ascii_lowercase();
        if self
            .orgs
            .iter()
            .any(|(k, o)| *k != key && o.my_domain_host == host)
        {
            return Err(SimError::AlreadyExists(host));
        }
        if let Some(o) = self.orgs.get_mut(&key) {
            o.my_domain_host = host;
        }
        self.org_info(key).ok_or(SimError::UnknownOrg(org.into()))
    }

    /// Gives a sandbox a new org id; every grant and session of its users dies.
    pub fn refresh_sandbox(&mut self, org: &str) -> Result<OrgInfo, SimError> {
        let key = self.org_key(org)?;
        let o = self
            .orgs
            .get_mut(&key)
            .ok_or(SimError::UnknownOrg(org.into()))?;
        if !o.kind.is_sandbox() {
            return Err(SimError::Invalid(format!("{} is not a sandbox", o.label)));
        }
        let old_id = std::mem::replace(&mut o.id, ids::salesforce_id("00D"));
        for g in self.grants.values_mut().filter(|g| g.org_id == old_id) {
            g.revoked = true;
        }
        for t in self
            .access_tokens
            .values_mut()
            .filter(|t| t.org_id == old_id)
        {
            t.revoked = true;
        }
        let users: HashSet<String> = self
            .users
            .values()
            .filter(|u| u.org == key)
            .map(|u| u.id.clone())
            .collect();
        self.consents.retain(|(u, _)| !users.contains(u));
        self.codes.retain(|_, c| !users.contains(&c.user_id));
        self.org_info(key).ok_or(SimError::UnknownOrg(org.into()))
    }

    // ----- grants and tokens -----

    pub fn new_grant_id(&mut self) -> u64 {
        let id = self.next_grant_id;
        self.next_grant_id += 1;
        id
    }

    /// Revokes a grant: its refresh tokens (current and rotated-out) and its access tokens.
    pub fn revoke_grant(&mut self, grant_id: u64) {
        if let Some(g) = self.grants.get_mut(&grant_id) {
            g.revoked = true;
        }
        for t in self
            .access_tokens
            .values_mut()
            .filter(|t| t.grant == Some(grant_id))
        {
            t.revoked = true;
        }
    }

    /// Revokes every grant (and session) of a user, optionally only for one app; the
    /// user's approval of those apps is forgotten too. Returns how many grants died.
    pub fn revoke_user_tokens(&mut self, user: &str, app: Option<&str>) -> Result<usize, SimError> {
        let user_id = self.user_id(user)?;
        let client_id = app.map(|a| self.app_id(a)).transpose()?;
        let matches =
            |u: &str, c: &str| u == user_id && client_id.as_deref().is_none_or(|id| id == c);
        let ids: Vec<u64> = self
            .grants
            .iter()
            .filter(|(_, g)| !g.revoked && matches(&g.user_id, &g.client_id))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.revoke_grant(*id);
        }
        for t in self
            .access_tokens
            .values_mut()
            .filter(|t| matches(&t.user_id, &t.client_id))
        {
            t.revoked = true;
        }
        self.consents.retain(|(u, c)| !matches(u, c));
        Ok(ids.len())
    }

    /// Revokes every token of an app, for every user: the "all tokens of a specific external
    /// client app" action of the External Client Apps OAuth Usage page (Salesforce Help,
    /// "Manage External Client App OAuth Usage"). Returns how many grants died.
    pub fn revoke_app_tokens(&mut self, app: &str) -> Result<usize, SimError> {
        let client_id = self.app_id(app)?;
        let ids: Vec<u64> = self
            .grants
            .iter()
            .filter(|(_, g)| !g.revoked && g.client_id == client_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.revoke_grant(*id);
        }
        for t in self
            .access_tokens
            .values_mut()
            .filter(|t| t.client_id == client_id)
        {
            t.revoked = true;
        }
        self.consents.retain(|(_, c)| *c != client_id);
        Ok(ids.len())
    }

    /// Revokes the grant behind a refresh token (current or rotated-out).
    pub fn revoke_refresh_token(&mut self, token: &str) -> Result<(), SimError> {
        let (grant_id, _) = *self
            .refresh_index
            .get(token)
            .ok_or(SimError::UnknownRefreshToken)?;
        if self.grants.get(&grant_id).is_none_or(|g| g.revoked) {
            return Err(SimError::UnknownRefreshToken);
        }
        self.revoke_grant(grant_id);
        Ok(())
    }

    /// Kills every access token; refresh tokens keep working.
    pub fn expire_all_sessions(&mut self) -> usize {
        let mut n = 0;
        for t in self.access_tokens.values_mut().filter(|t| !t.revoked) {
            t.revoked = true;
            n += 1;
        }
        n
    }

    /// Whether the refresh token policy has ended this grant at `now`.
    pub fn grant_policy_expired(&self, grant: &Grant, now: Millis) -> bool {
        if !self.apps.contains_key(&grant.client_id) {
            return true;
        }
        self.grant_expiry(grant).is_some_and(|end| now >= end)
    }

    /// When the policy would end this grant, if it ever does.
    pub fn grant_expiry(&self, grant: &Grant) -> Option<Millis> {
        let app = self.apps.get(&grant.client_id)?;
        let by_policy = match app.refresh_token_policy {
            RefreshTokenPolicy::UntilRevoked => None,
            RefreshTokenPolicy::ExpireAfter { after } => {
                Some(grant.created_at.saturating_add(ms(after)))
            }
            RefreshTokenPolicy::ExpireIfUnused { unused_for } => {
                Some(grant.last_used.saturating_add(ms(unused_for)))
            }
            RefreshTokenPolicy::ImmediatelyExpire => Some(grant.created_at),
        };
        // The ECA idle limit applies on top of every policy but "Immediately expire".
        let idle = (app.kind == AppKind::ExternalClientApp && app.idle_refresh_limit)
            .then(|| grant.last_used.saturating_add(ms(ECA_IDLE_REFRESH_LIMIT)));
        match (by_policy, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a grant's refresh token can still be used (ignoring who presents it).
    pub fn grant_alive(&self, grant: &Grant, now: Millis) -> bool {
        if grant.revoked || self.grant_policy_expired(grant, now) {
            return false;
        }
        let Some(user) = self.users.get(&grant.user_id) else {
            return false;
        };
        self.orgs
            .get(&user.org)
            .is_some_and(|o| o.id == grant.org_id)
    }

    /// Refresh tokens that would be accepted right now for a user (and app).
    pub fn valid_refresh_tokens(
        &self,
        user: &str,
        app: Option<&str>,
    ) -> Result<Vec<String>, SimError> {
        let user_id = self.user_id(user)?;
        let client_id = app.map(|a| self.app_id(a)).transpose()?;
        let now = self.now();
        let mut grants: Vec<(u64, &Grant)> = self
            .grants
            .iter()
            .filter(|(_, g)| {
                g.user_id == user_id && client_id.as_deref().is_none_or(|c| c == g.client_id)
            })
            .filter(|(_, g)| self.grant_alive(g, now))
            .map(|(id, g)| (*id, g))
            .collect();
        grants.sort_by_key(|(id, _)| *id);
        Ok(grants
            .into_iter()
            .map(|(_, g)| g.refresh_token.clone())
            .collect())
    }

    /// Whether an access token is usable at `now` (revocation, user, org id, grant, timeout).
    pub fn access_token_alive(&self, token: &AccessToken, now: Millis) -> bool {
        if token.revoked {
            return false;
        }
        let Some(app) = self.apps.get(&token.client_id) else {
            return false;
        };
        if app.blocked {
            return false;
        }
        let Some(user) = self.users.get(&token.user_id) else {
            return false;
        };
        if !user.active
            || self
                .orgs
                .get(&user.org)
                .is_none_or(|o| o.id != token.org_id)
        {
            return false;
        }
        if let Some(g) = token.grant.and_then(|g| self.grants.get(&g))
            && g.revoked
        {
            return false;
        }
        now < token.last_used.saturating_add(ms(app.session_timeout))
    }

    /// Forgets long-expired codes and tickets, to keep memory flat in long demos
    /// (recently expired codes stay, so they are reported as expired, not unknown).
    pub fn sweep(&mut self) {
        let now = self.now();
        let keep = |issued: Millis, life: Duration| {
            now < issued.saturating_add(ms(life).saturating_mul(4))
        };
        self.codes.retain(|_, c| keep(c.issued_at, CODE_LIFETIME));
        self.tickets
            .retain(|_, t| keep(t.issued_at, TICKET_LIFETIME));
    }
}
