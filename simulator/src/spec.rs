//! Public description types: builders for orgs, users and connected apps, and the
//! read-only views the simulator hands back. Kept apart from the mutable state so the
//! control surface (Rust and HTTP) shares one vocabulary.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Production, Developer Edition or sandbox. Decides the login host (`login` vs `test`)
/// and the shape of the My Domain host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrgKind {
    Production,
    DeveloperEdition,
    Sandbox { sandbox_name: String },
}

impl OrgKind {
    pub fn is_sandbox(&self) -> bool {
        matches!(self, OrgKind::Sandbox { .. })
    }

    /// `https://login.salesforce.com` or `https://test.salesforce.com`.
    pub fn login_url(&self) -> &'static str {
        if self.is_sandbox() {
            "https://test.salesforce.com"
        } else {
            "https://login.salesforce.com"
        }
    }
}

/// What to create with [`crate::Control::create_org`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgSpec {
    /// My Domain name (`acme` gives `acme.my.salesforce.com`).
    pub name: String,
    #[serde(flatten)]
    pub kind: OrgKind,
}

impl OrgSpec {
    pub fn production(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: OrgKind::Production,
        }
    }

    /// `acme` + `uat` gives `acme--uat.sandbox.my.salesforce.com`.
    pub fn sandbox(name: impl Into<String>, sandbox_name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: OrgKind::Sandbox {
                sandbox_name: sandbox_name.into(),
            },
        }
    }

    /// `acme` gives `acme-dev-ed.develop.my.salesforce.com`.
    pub fn developer_edition(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: OrgKind::DeveloperEdition,
        }
    }

    /// The label that names this org on the control surface (stable across sandbox refreshes).
    pub fn label(&self) -> String {
        match &self.kind {
            OrgKind::Sandbox { sandbox_name } => format!("{}--{}", self.name, sandbox_name),
            _ => self.name.clone(),
        }
    }

    pub fn my_domain_host(&self) -> String {
        match &self.kind {
            OrgKind::Production => format!("{}.my.salesforce.com", self.name),
            OrgKind::DeveloperEdition => format!("{}-dev-ed.develop.my.salesforce.com", self.name),
            OrgKind::Sandbox { sandbox_name } => {
                format!("{}--{}.sandbox.my.salesforce.com", self.name, sandbox_name)
            }
        }
    }
}

/// An org as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgInfo {
    /// Stable label: `acme`, `acme--uat`.
    pub label: String,
    /// 18-character org id (changes when a sandbox is refreshed).
    pub id: String,
    pub kind: OrgKind,
    pub my_domain_host: String,
    /// `https://<my domain host>`.
    pub instance_url: String,
    /// `https://login.salesforce.com` or `https://test.salesforce.com`.
    pub login_url: String,
}

/// What to create with [`crate::Control::create_user`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSpec {
    /// Org reference: label, org id or My Domain host.
    pub org: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "default_true")]
    pub active: bool,
    /// The "Approve Uninstalled Connected Apps" permission.
    #[serde(default)]
    pub approve_uninstalled_apps: bool,
    /// Names of the permission sets assigned to the user (an External Client App whose
    /// Permitted Users policy is "Admin approved users are pre-authorized" admits users
    /// through the permission sets selected in its policies).
    #[serde(default)]
    pub permission_sets: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl UserSpec {
    pub fn new(
        org: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            org: org.into(),
            username: username.into(),
            password: password.into(),
            name: None,
            email: None,
            active: true,
            approve_uninstalled_apps: false,
            permission_sets: Vec::new(),
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }

    pub fn approve_uninstalled_apps(mut self, allowed: bool) -> Self {
        self.approve_uninstalled_apps = allowed;
        self
    }

    pub fn permission_set(mut self, name: impl Into<String>) -> Self {
        self.permission_sets.push(name.into());
        self
    }
}

/// A user as it is now. The password is not included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// 18-character user id (`005...`).
    pub id: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub org_label: String,
    pub org_id: String,
    pub active: bool,
    pub approve_uninstalled_apps: bool,
    pub permission_sets: Vec<String>,
}

/// The app's refresh token policy (a Connected App's OAuth policy, or an External Client
/// App's OAuth policy on its Policies tab; the same four choices in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RefreshTokenPolicy {
    /// Valid until revoked (the Salesforce default).
    UntilRevoked,
    /// Expires this long after the grant was issued.
    ExpireAfter {
        #[serde(with = "duration_secs")]
        after: Duration,
    },
    /// Expires when not used for this long.
    ExpireIfUnused {
        #[serde(with = "duration_secs")]
        unused_for: Duration,
    },
    /// "Immediately expire refresh token": a refresh token is issued but never accepted.
    /// Named in "Limit the Idle Refresh Token TTL in External Client Apps" (Salesforce Help,
    /// xcloud.eca_limit_idle_refresh_token_ttl); how its refusal reads is assumed to be the
    /// usual `expired access/refresh token`.
    ImmediatelyExpire,
}

/// Which framework the app belongs to. Both use the same OAuth endpoints and error bodies;
/// what differs is where the settings live and a few defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// A Connected App (created before Spring '26, or from a package). Must be installed
    /// in an org before users without "Approve Uninstalled Connected Apps" may use it.
    #[default]
    ConnectedApp,
    /// An External Client App: developer *settings* (OAuth plugin: callback URL, scopes,
    /// PKCE, "Require secret for Web Server Flow" / "for Refresh Token Flow", JWT
    /// certificate, client credentials) apart from admin *policies* (permitted users,
    /// refresh token policy, IP relaxation, session timeout, run-as user). A local app
    /// lives in the org that created it, so the installation check of Connected Apps does
    /// not apply (assumed: Salesforce documents the September 2025 block for uninstalled
    /// Connected Apps only).
    ExternalClientApp,
}

/// The 30-day idle limit of "Limit the Idle Refresh Token TTL in External Client Apps"
/// (Salesforce Help, xcloud.eca_limit_idle_refresh_token_ttl): a sliding window that every
/// use of the refresh token resets.
pub const ECA_IDLE_REFRESH_LIMIT: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Who may use the app: "All users may self-authorize" or "Admin approved users are
/// pre-authorized".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermittedUsers {
    #[default]
    AllUsersSelfAuthorize,
    AdminApprovedPreAuthorized,
}

pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// Default session timeout of an access token (2 hours of inactivity).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// Scopes a new app has unless told otherwise.
pub const DEFAULT_SCOPES: &[&str] = &[
    "api",
    "refresh_token",
    "offline_access",
    "id",
    "profile",
    "email",
    "address",
    "phone",
    "openid",
    "web",
];

/// What to create with [`crate::Control::create_app`]. Defaults follow a new connected
/// app: rotation off, refresh tokens valid until revoked, 2 h session timeout, all users
/// may self-authorize, PKCE accepted but not required.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    /// Confidential apps have a consumer secret; public ones do not.
    #[serde(default = "default_true")]
    pub confidential: bool,
    /// Fixed consumer key; random (`3MVG9...`) when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Fixed consumer secret (confidential apps); random when absent.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Selected OAuth scopes; [`DEFAULT_SCOPES`] when empty.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Org references the app is installed in.
    #[serde(default)]
    pub installed_in: Vec<String>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub rotation: bool,
    #[serde(default = "default_policy")]
    pub refresh_token_policy: RefreshTokenPolicy,
    #[serde(default = "default_timeout", with = "duration_secs")]
    pub session_timeout: Duration,
    #[serde(default)]
    pub permitted_users: PermittedUsers,
    /// Usernames pre-authorized (profile / permission set) for this app.
    #[serde(default)]
    pub pre_authorized: Vec<String>,
    /// PEM of the RSA public key or X.509 certificate used to verify JWT bearer assertions.
    #[serde(default)]
    pub jwt_public_key_pem: Option<String>,
    /// Username of the client credentials run-as user.
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default)]
    pub require_pkce: bool,
    /// Connected App or External Client App.
    #[serde(default)]
    pub kind: AppKind,
    /// "Require secret for Web Server Flow": the code exchange must carry the consumer
    /// secret (ECA setting; `isConsumerSecretOptional` inverted in the
    /// ExtlClntAppGlobalOauthSettings metadata type). Only meaningful for confidential apps.
    #[serde(default = "default_true")]
    pub require_secret_for_web_server: bool,
    /// "Require secret for Refresh Token Flow": a refresh must carry the consumer secret
    /// (Salesforce Help: "Security: Require Secret for Refresh Token Flow Control").
    #[serde(default = "default_true")]
    pub require_secret_for_refresh: bool,
    /// Permission sets pre-authorized by the Permitted Users policy (ECA policies:
    /// `commaSeparatedPermissionSet` in ExtlClntAppOauthConfigurablePolicies).
    #[serde(default)]
    pub permission_sets: Vec<String>,
    /// The ECA setting that caps refresh tokens at 30 days without use.
    #[serde(default)]
    pub idle_refresh_limit: bool,
}

fn default_policy() -> RefreshTokenPolicy {
    RefreshTokenPolicy::UntilRevoked
}

fn default_timeout() -> Duration {
    DEFAULT_SESSION_TIMEOUT
}

impl AppSpec {
    fn base(name: String, confidential: bool) -> Self {
        Self {
            name,
            confidential,
            client_id: None,
            client_secret: None,
            redirect_uris: Vec::new(),
            scopes: Vec::new(),
            installed_in: Vec::new(),
            blocked: false,
            rotation: false,
            refresh_token_policy: RefreshTokenPolicy::UntilRevoked,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            permitted_users: PermittedUsers::AllUsersSelfAuthorize,
            pre_authorized: Vec::new(),
            jwt_public_key_pem: None,
            run_as: None,
            require_pkce: false,
            kind: AppKind::ConnectedApp,
            require_secret_for_web_server: true,
            require_secret_for_refresh: true,
            permission_sets: Vec::new(),
            idle_refresh_limit: false,
        }
    }

    /// An External Client App with the settings a new one starts with, as Salesforce's
    /// guides list them: "Require secret for Web Server Flow", "Require secret for Refresh
    /// Token Flow" and "Require Proof Key for Code Exchange (PKCE)" all selected (Salesforce
    /// Developers, "Prerequisite 1 - Create an External Client App").
    pub fn external_client_app(name: impl Into<String>) -> Self {
        let mut spec = Self::base(name.into(), true);
        spec.kind = AppKind::ExternalClientApp;
        spec.require_pkce = true;
        spec
    }

    pub fn kind(mut self, kind: AppKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn require_secret_for_web_server(mut self, required: bool) -> Self {
        self.require_secret_for_web_server = required;
        self
    }

    pub fn require_secret_for_refresh(mut self, required: bool) -> Self {
        self.require_secret_for_refresh = required;
        self
    }

    /// Pre-authorizes a permission set (users who hold it pass "Admin approved users are
    /// pre-authorized").
    pub fn permission_set(mut self, name: impl Into<String>) -> Self {
        self.permission_sets.push(name.into());
        self
    }

    pub fn idle_refresh_limit(mut self, on: bool) -> Self {
        self.idle_refresh_limit = on;
        self
    }

    /// An app with a consumer secret.
    pub fn confidential(name: impl Into<String>) -> Self {
        Self::base(name.into(), true)
    }

    /// An app without a consumer secret (PKCE only).
    pub fn public(name: impl Into<String>) -> Self {
        Self::base(name.into(), false)
    }

    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    pub fn install_in(mut self, org: impl Into<String>) -> Self {
        self.installed_in.push(org.into());
        self
    }

    pub fn blocked(mut self, blocked: bool) -> Self {
        self.blocked = blocked;
        self
    }

    pub fn rotation(mut self, enabled: bool) -> Self {
        self.rotation = enabled;
        self
    }

    pub fn refresh_token_policy(mut self, policy: RefreshTokenPolicy) -> Self {
        self.refresh_token_policy = policy;
        self
    }

    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    pub fn permitted_users(mut self, permitted: PermittedUsers) -> Self {
        self.permitted_users = permitted;
        self
    }

    pub fn pre_authorize(mut self, username: impl Into<String>) -> Self {
        self.pre_authorized.push(username.into());
        self
    }

    pub fn jwt_public_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.jwt_public_key_pem = Some(pem.into());
        self
    }

    pub fn run_as(mut self, username: impl Into<String>) -> Self {
        self.run_as = Some(username.into());
        self
    }

    pub fn require_pkce(mut self, required: bool) -> Self {
        self.require_pkce = required;
        self
    }
}

/// A connected app as it is now, including its consumer key and secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub installed_in: Vec<String>,
    pub blocked: bool,
    pub rotation: bool,
    pub refresh_token_policy: RefreshTokenPolicy,
    #[serde(with = "duration_secs")]
    pub session_timeout: Duration,
    pub permitted_users: PermittedUsers,
    pub pre_authorized: Vec<String>,
    pub jwt_enabled: bool,
    pub run_as: Option<String>,
    pub require_pkce: bool,
    pub kind: AppKind,
    pub require_secret_for_web_server: bool,
    pub require_secret_for_refresh: bool,
    pub permission_sets: Vec<String>,
    pub idle_refresh_limit: bool,
}

impl fmt::Debug for AppInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppInfo")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("kind", &self.kind)
            .field("installed_in", &self.installed_in)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's success body, field for field (no `expires_in`: Salesforce has none).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub signature: String,
    pub scope: String,
    pub instance_url: String,
    pub id: String,
    pub token_type: String,
    /// Milliseconds since the epoch, as a string.
    pub issued_at: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .field("instance_url", &self.instance_url)
            .field("id", &self.id)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}
