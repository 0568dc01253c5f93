//! The `SalesforceOrg` custom resource: what a person declares and what the operator reports.
//!
//! Validation lives in the schema (OpenAPI limits and CEL rules) so that the API server rejects
//! a bad spec with a message that says what to write instead, before the controller sees it.
//! The wire shape keeps `spec.auth` as three optional members because that is what users write;
//! [`AuthFlow`] is the checked form the controller works with, where "exactly one" is a type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, Time,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::conditions::Condition;

/// The API group of every resource this operator defines.
pub const GROUP: &str = "orgtokens.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A Salesforce org whose OAuth connection the operator keeps alive.
// clippy reads the repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "orgtokens.dev",
    version = "v1alpha1",
    kind = "SalesforceOrg",
    plural = "salesforceorgs",
    shortname = "sforg",
    category = "salesforce",
    namespaced,
    status = "SalesforceOrgStatus",
    derive = "PartialEq",
    doc = "A Salesforce org connection: how to authenticate, where its tokens live, and which backup CronJobs depend on it.",
    printcolumn(
        name = "Token",
        type_ = "string",
        json_path = ".status.state",
        description = "Valid, Expired, Pending or Unknown"
    ),
    printcolumn(name = "Org ID", type_ = "string", json_path = ".status.orgId"),
    printcolumn(name = "Username", type_ = "string", json_path = ".status.username"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Held",
        type_ = "string",
        json_path = ".status.suspendedCronJobs",
        description = "CronJobs suspended by this org",
        priority = 1
    ),
    printcolumn(
        name = "Authorized By",
        type_ = "string",
        json_path = ".status.authorizedBy",
        description = "The Salesforce user whose login through the re-auth link stored the tokens",
        priority = 1
    ),
    printcolumn(
        name = "Authorized",
        type_ = "date",
        json_path = ".status.authorizedAt",
        priority = 1
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.authorizationExpiresAt",
        description = "When the refresh token policy ends the last authorization (a time, because kubectl shows future dates as <invalid>)",
        priority = 1
    ),
    printcolumn(
        name = "Reauth",
        type_ = "string",
        json_path = ".status.reauth.url",
        description = "Open to log in to Salesforce again",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
// Every spelling of the shared login hosts (any case, an explicit :443, a trailing dot) is the
// same host to Salesforce. A regular expression on the length-bounded field keeps the rule's
// estimated cost within the API server's budget (url(...).getHostname() is unbounded).
#[x_kube(validation = Rule::new("!has(self.auth.clientCredentials) || !self.loginUrl.lowerAscii().matches('^https://(login|test)[.]salesforce[.]com[.]?(:0*443)?/?$')").message("the client credentials flow works only on the org's My Domain: set loginUrl to https://<mydomain>.my.salesforce.com").field_path(".loginUrl"))]
pub struct SalesforceOrgSpec {
    /// Where to log in: https://login.salesforce.com, https://test.salesforce.com (sandboxes) or the
    /// org's My Domain URL. HTTPS only, no path. The operator sends credentials only to hosts that
    /// the cluster administrator allows (see the operator's --allowed-login-domain).
    #[schemars(length(min = 9, max = 253))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'https'").message("loginUrl must be an https:// URL, for example https://login.salesforce.com"))]
    #[x_kube(validation = Rule::new("!isURL(self) || (url(self).getEscapedPath() in ['', '/'] && url(self).getQuery().size() == 0 && !self.contains('#') && !self.contains('@'))").message("loginUrl must be the bare host with no path, query, fragment or user, for example https://acme.my.salesforce.com"))]
    pub login_url: String,

    /// How the operator authenticates: set exactly one of webServer, jwtBearer or clientCredentials.
    pub auth: AuthSpec,

    /// The Secret (in this namespace) where the operator keeps the tokens. The operator creates
    /// and owns it; tokens never appear in status, events or logs.
    pub token_secret_ref: TokenSecretRef,

    /// The org id (00D..., 15 or 18 characters) this resource must connect to. When unset, the
    /// first org seen is pinned in status and a different one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 15, max = 18),
        regex(pattern = r"^00D[a-zA-Z0-9]{12}([a-zA-Z0-9]{3})?$")
    )]
    pub expected_org_id: Option<String>,

    /// Which CronJobs in this namespace depend on the org: they are suspended while its token is
    /// expired and resumed once it is valid again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependents: Option<Dependents>,

    /// How often to validate the token against Salesforce, as a duration such as 15m or 1h
    /// (at least 1m, at most 24h). Defaults to 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("checkInterval must be a duration between 1m and 24h written with h, m and s, for example 15m or 1h30m"))]
    pub check_interval: Option<String>,

    // This and notifications are boxed: rarely set, and every cached org carries the fields.
    /// The refresh token policy of the Connected App or External Client App, as its Salesforce
    /// admin set it (the operator cannot read it from Salesforce). It drives
    /// status.authorizationExpiresAt and the TokenExpiringSoon condition. Defaults to
    /// ValidUntilRevoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_policy: Option<Box<RefreshTokenPolicy>>,

    /// Who is told when the org needs a person: channels the cluster administrator defined
    /// (by name) and email recipients. Orgs that set nothing use the operator's default
    /// channels (--notification-default-channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Box<NotificationsSpec>>,
}

/// The app's refresh token policy: `type` and, except for ValidUntilRevoked, `duration`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'ValidUntilRevoked' ? !has(self.duration) : has(self.duration)").message("refreshTokenPolicy.duration is required with ExpireAfter and ExpireIfNotUsedFor, and not allowed with ValidUntilRevoked"))]
pub struct RefreshTokenPolicy {
    /// ValidUntilRevoked (Salesforce's default), ExpireAfter ("Expire refresh token after"
    /// duration, counted from the login that issued it) or ExpireIfNotUsedFor ("Expire refresh
    /// token if not used for" duration).
    #[serde(rename = "type")]
    pub type_: RefreshTokenPolicyType,
    /// The policy's duration in whole days, hours, minutes and seconds, largest first, for
    /// example 90d, 36h or 1d12h (Salesforce's "N months" is about 30d each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,5}d)?([0-9]{1,6}h)?([0-9]{1,8}m)?([0-9]{1,10}s)?$') && self.matches('[1-9]')").message("refreshTokenPolicy.duration must be whole days, hours, minutes and seconds, largest first and above zero, for example 90d, 36h or 1d12h"))]
    pub duration: Option<String>,
}

/// The three refresh token policies Salesforce offers (besides "Immediately expire", which
/// this operator cannot work with).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RefreshTokenPolicyType {
    /// "Refresh token is valid until revoked".
    #[default]
    ValidUntilRevoked,
    /// "Expire refresh token after" the duration since the login.
    ExpireAfter,
    /// "Expire refresh token if not used for" the duration.
    ExpireIfNotUsedFor,
}

/// The checked form of [`RefreshTokenPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenPolicy {
    /// Never expires by policy.
    #[default]
    ValidUntilRevoked,
    /// Expires this long after the login that issued it.
    ExpireAfter(std::time::Duration),
    /// Expires when not used for this long.
    ExpireIfNotUsedFor(std::time::Duration),
}

/// Where an org's notifications go.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// Channels defined by the cluster administrator in the operator's channels Secret, by
    /// name (for example team-webhook, admins-mail). No URL or mail server is ever taken from
    /// here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("notifications.channels must not name a channel twice"))]
    pub channels: Vec<String>,
    /// Email addresses that email channels write to. Only addresses in domains the cluster
    /// administrator allows (--notification-recipient-domains) receive mail; others are listed
    /// in status.refusedRecipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(
            length(min = 3, max = 254),
            regex(pattern = r"^[^@\s<>,;]+@[^@\s<>,;]+$")
        )
    )]
    pub recipients: Vec<String>,
}

/// What a notification is about.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// The token expired: a person must log in through the link.
    Expired,
    /// Still expired, some time later.
    Reminder,
    /// The authorization expires soon (condition TokenExpiringSoon).
    ExpiringSoon,
    /// Valid again after being expired.
    Recovered,
    /// A login through the re-auth link was refused.
    ReauthRefused,
}

/// Where a notification's delivery stands.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Decided, not delivered yet (delivered again after a restart, with the same key).
    Pending,
    /// The channel accepted it.
    Sent,
    /// The channel refused it or stayed unreachable through every retry.
    Failed,
}

/// One notification on one channel, recorded so it is sent once per transition across
/// restarts and leader changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// The idempotency key (the same on every channel and every delivery attempt): the org's
    /// uid, the kind, and the transition it is about.
    pub key: String,
    /// The channel's name.
    pub channel: String,
    /// What it is about.
    pub kind: NoticeKind,
    /// The reminder's number (1, 2, ...), for reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<u32>,
    /// The condition reason it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the transition it reports happened.
    pub since: Time,
    /// When the operator decided to send it.
    pub decided_at: Time,
    /// Pending, Sent or Failed.
    pub state: DeliveryState,
    /// Delivery attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When the channel accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The authentication flow. The CRD keeps three optional members; the CEL rule makes exactly
/// one of them present.
// Each is boxed: one is set, and the other two then cost a pointer instead of their whole
// size in every cached org.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.webServer) ? 1 : 0) + (has(self.jwtBearer) ? 1 : 0) + (has(self.clientCredentials) ? 1 : 0) == 1").message("set exactly one of auth.webServer (a person logs in through a link), auth.jwtBearer (certificate, no person) or auth.clientCredentials (My Domain run-as user)"))]
pub struct AuthSpec {
    /// OAuth web server flow with PKCE: a person authorizes through the re-auth link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_server: Option<Box<WebServerAuth>>,
    /// OAuth JWT bearer flow: the operator signs an assertion with a private key; no person needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_bearer: Option<Box<JwtBearerAuth>>,
    /// OAuth client credentials flow (My Domain only): the app's run-as user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<Box<ClientCredentialsAuth>>,
}

/// Web server flow settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebServerAuth {
    /// The consumer key of the Connected App or External Client App (not a secret).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9._\-]+$"))]
    pub client_id: String,
    /// The consumer secret. Leave unset for a PKCE-only client: the app must then not require
    /// its secret for the web server and refresh token flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// OAuth scopes to request. Must include refresh_token (or offline_access) so the connection
    /// survives without a person. Defaults to [api, refresh_token].
    #[serde(default = "default_scopes", deserialize_with = "known_scopes")]
    #[schemars(
        length(min = 1, max = 16),
        inner(length(min = 1, max = 64), regex(pattern = r"^[a-z_]+$"))
    )]
    #[x_kube(validation = Rule::new("self.exists(s, s == 'refresh_token' || s == 'offline_access')").message("scopes must include refresh_token (or offline_access), otherwise Salesforce issues no refresh token and the org expires with every session"))]
    // Salesforce's scope names, borrowed when read back: every web server org carries them.
    pub scopes: Vec<Cow<'static, str>>,
}

fn default_scopes() -> Vec<Cow<'static, str>> {
    vec![Cow::Borrowed("api"), Cow::Borrowed("refresh_token")]
}

/// Scopes read back, each the static spelling when it is one of Salesforce's common scopes.
fn known_scopes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Cow<'static, str>>, D::Error> {
    const KNOWN: [&str; 7] = [
        "api",
        "refresh_token",
        "offline_access",
        "full",
        "web",
        "id",
        "openid",
    ];
    let scopes = Vec::<String>::deserialize(deserializer)?;
    Ok(scopes
        .into_iter()
        .map(
            |scope| match KNOWN.into_iter().find(|known| *known == scope) {
                Some(known) => Cow::Borrowed(known),
                None => Cow::Owned(scope),
            },
        )
        .collect())
}

/// JWT bearer flow settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtBearerAuth {
    /// The consumer key of the Connected App or External Client App (the JWT issuer).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9._\-]+$"))]
    pub client_id: String,
    /// The Salesforce username to act as (the JWT subject), pre-authorized for the app.
    #[schemars(length(min = 3, max = 80), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub username: String,
    /// The PEM RSA private key whose certificate is uploaded to the app.
    pub private_key_ref: SecretKeyRef,
}

/// Client credentials flow settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentialsAuth {
    /// The consumer key of the Connected App or External Client App.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9._\-]+$"))]
    pub client_id: String,
    /// The app's consumer secret.
    pub client_secret_ref: SecretKeyRef,
}

/// A key in a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The key inside the Secret's data, for example client-secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// The Secret that holds an org's tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// The Secret's name. The operator creates it when missing.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// The CronJobs that depend on an org.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cronJobSelector) || (has(self.cronJobNames) && size(self.cronJobNames) > 0)").message("dependents needs cronJobSelector (for example matchLabels: {orgtokens.dev/org: acme-prod}) or a non-empty cronJobNames list"))]
pub struct Dependents {
    /// CronJobs in this namespace whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job_selector: Option<CronJobSelector>,
    /// CronJobs in this namespace named explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 52),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )
    )]
    pub cron_job_names: Option<Vec<String>>,
}

/// A label selector: Kubernetes' `LabelSelector` on the wire and in the schema, held compactly.
/// Every org's spec stays in the operator's cache for as long as the org exists, and the
/// `BTreeMap` of a one-label `matchLabels` allocates a node sized for eleven (about 0.5 KiB).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(from = "LabelSelector", into = "LabelSelector")]
pub struct CronJobSelector {
    labels: Box<[(String, String)]>,
    expressions: Box<[LabelSelectorRequirement]>,
}

impl CronJobSelector {
    /// The selector in Kubernetes' own type, to match labels or to list with.
    pub fn to_label_selector(&self) -> LabelSelector {
        self.clone().into()
    }
}

impl From<LabelSelector> for CronJobSelector {
    fn from(selector: LabelSelector) -> Self {
        Self {
            labels: selector
                .match_labels
                .unwrap_or_default()
                .into_iter()
                .collect(),
            expressions: selector.match_expressions.unwrap_or_default().into(),
        }
    }
}

impl From<CronJobSelector> for LabelSelector {
    fn from(selector: CronJobSelector) -> Self {
        // An absent and an empty matchLabels select alike; absent is what users write.
        Self {
            match_labels: (!selector.labels.is_empty())
                .then(|| selector.labels.into_vec().into_iter().collect()),
            match_expressions: (!selector.expressions.is_empty())
                .then(|| selector.expressions.into_vec()),
        }
    }
}

impl schemars::JsonSchema for CronJobSelector {
    fn schema_name() -> Cow<'static, str> {
        LabelSelector::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        LabelSelector::schema_id()
    }

    fn inline_schema() -> bool {
        LabelSelector::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        LabelSelector::json_schema(generator)
    }
}

/// What a person reads first, like the "Token Valid" badge of a backup product.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TokenState {
    /// Not connected yet: waiting for first tokens.
    #[default]
    Pending,
    /// Salesforce accepted the tokens at the last check.
    Valid,
    /// Salesforce refused the tokens for good: a person must re-authorize.
    Expired,
    /// Salesforce could not be asked (outage, timeout): nothing is paused for this.
    Unknown,
}

/// The link a person opens to log into Salesforce again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReauthLink {
    /// Open in a browser to authorize the org again.
    pub url: String,
    /// After this time the link no longer works; the operator writes a fresh one before then.
    pub expires_at: Time,
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SalesforceOrgStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Valid, Expired, Pending or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TokenState>,
    /// TokenValid, TokenExpired and Ready, with reasons that say what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The connected org's id (pinned at first connection unless spec.expectedOrgId is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The Salesforce username the tokens act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The API host Salesforce returned with the last token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// When the token was last checked against Salesforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<Time>,
    /// When a new access token was last obtained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed_at: Option<Time>,
    /// When the app's refresh token policy ends the last authorization (spec.refreshTokenPolicy
    /// from authorizedAt); absent when it never does or when the time is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_expires_at: Option<Time>,
    /// While TokenExpiringSoon is True: the shortest of the operator's expiry lead times
    /// already reached (for example 7d, then 2d), so one notice can be sent per lead time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_lead_time: Option<String>,
    /// The Salesforce username whose login through the re-auth link stored the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_by: Option<String>,
    /// When that login happened (for tokens stored by hand: the token Secret's
    /// orgtokens.dev/authorized-at annotation, when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<Time>,
    /// Present while the org needs a person to log in, and while its authorization expires
    /// soon (TokenExpiringSoon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth: Option<ReauthLink>,
    /// CronJobs this org has suspended and will resume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspended_cron_jobs: Vec<String>,
    /// The token Secret's resourceVersion this status was decided on. When it still matches
    /// (with observedGeneration) after an operator restart, the status is current and the
    /// org's next check waits for its slot instead of running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_version: Option<String>,
    /// Notifications of the current transitions, and whether each was delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub notifications: Vec<NotificationRecord>,
    /// Addresses in spec.notifications.recipients outside the domains the cluster
    /// administrator allows: nothing is sent to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_recipients: Vec<String>,
}

/// The checked form of [`AuthSpec`]: exactly one flow, as the controller needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthFlow {
    /// A person authorizes through a link; the operator refreshes.
    WebServer(WebServerAuth),
    /// The operator mints tokens with a signed assertion.
    JwtBearer(JwtBearerAuth),
    /// The operator mints tokens with the app's secret.
    ClientCredentials(ClientCredentialsAuth),
}

/// A spec that the schema should have refused, seen anyway (for example an older CRD installed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Zero or several flows.
    #[error(
        "spec.auth must set exactly one of webServer, jwtBearer or clientCredentials (found {0}); update the CRD from crds/ and fix the resource"
    )]
    AuthFlowCount(usize),
    /// refreshTokenPolicy is inconsistent or its duration did not parse.
    #[error("spec.refreshTokenPolicy: {0}")]
    RefreshTokenPolicy(String),
    /// checkInterval did not parse.
    #[error("spec.checkInterval {0:?} is not a duration between 1m and 24h, for example 15m")]
    CheckInterval(String),
}

/// The default time between checks.
pub const DEFAULT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl AuthSpec {
    /// The one flow this spec names.
    pub fn flow(&self) -> Result<AuthFlow, SpecError> {
        match (&self.web_server, &self.jwt_bearer, &self.client_credentials) {
            (Some(w), None, None) => Ok(AuthFlow::WebServer(w.as_ref().clone())),
            (None, Some(j), None) => Ok(AuthFlow::JwtBearer(j.as_ref().clone())),
            (None, None, Some(c)) => Ok(AuthFlow::ClientCredentials(c.as_ref().clone())),
            (w, j, c) => Err(SpecError::AuthFlowCount(
                usize::from(w.is_some()) + usize::from(j.is_some()) + usize::from(c.is_some()),
            )),
        }
    }
}

impl SalesforceOrgSpec {
    /// The check interval, within the bounds the schema enforces.
    pub fn check_interval(&self) -> Result<std::time::Duration, SpecError> {
        let Some(text) = &self.check_interval else {
            return Ok(DEFAULT_CHECK_INTERVAL);
        };
        let parsed: kube::core::Duration = text
            .parse()
            .map_err(|_| SpecError::CheckInterval(text.clone()))?;
        let min = std::time::Duration::from_secs(60);
        let max = std::time::Duration::from_secs(24 * 3600);
        if parsed.is_negative() || parsed < min || parsed > max {
            return Err(SpecError::CheckInterval(text.clone()));
        }
        Ok(parsed.into())
    }

    /// The refresh token policy, checked.
    pub fn refresh_token_policy(&self) -> Result<TokenPolicy, SpecError> {
        let Some(policy) = &self.refresh_token_policy else {
            return Ok(TokenPolicy::ValidUntilRevoked);
        };
        let duration = policy
            .duration
            .as_deref()
            .map(crate::duration::parse)
            .transpose()
            .map_err(|e| SpecError::RefreshTokenPolicy(e.to_string()))?;
        let missing = || {
            SpecError::RefreshTokenPolicy(format!(
                "{:?} needs a duration, for example 90d",
                policy.type_
            ))
        };
        match (policy.type_, duration) {
            (RefreshTokenPolicyType::ValidUntilRevoked, None) => Ok(TokenPolicy::ValidUntilRevoked),
            (RefreshTokenPolicyType::ValidUntilRevoked, Some(_)) => Err(
                SpecError::RefreshTokenPolicy("ValidUntilRevoked takes no duration".into()),
            ),
            (RefreshTokenPolicyType::ExpireAfter, d) => {
                d.map(TokenPolicy::ExpireAfter).ok_or_else(missing)
            }
            (RefreshTokenPolicyType::ExpireIfNotUsedFor, d) => {
                d.map(TokenPolicy::ExpireIfNotUsedFor).ok_or_else(missing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> WebServerAuth {
        WebServerAuth {
            client_id: "3MVG9abc".into(),
            client_secret_ref: None,
            scopes: default_scopes(),
        }
    }

    fn spec(interval: Option<&str>) -> SalesforceOrgSpec {
        SalesforceOrgSpec {
            login_url: "https://login.salesforce.com".into(),
            auth: AuthSpec {
                web_server: Some(Box::new(web())),
                ..Default::default()
            },
            token_secret_ref: TokenSecretRef { name: "t".into() },
            expected_org_id: None,
            dependents: None,
            check_interval: interval.map(str::to_owned),
            refresh_token_policy: None,
            notifications: None,
        }
    }

    #[test]
    fn scopes_read_back_borrow_salesforces_names() {
        let read = |json: serde_json::Value| -> WebServerAuth {
            serde_json::from_value(json).expect("webServer")
        };
        let given = read(
            serde_json::json!({"clientId": "c", "scopes": ["api", "refresh_token", "chatter_api"]}),
        );
        assert!(matches!(given.scopes[0], Cow::Borrowed("api")));
        assert!(matches!(given.scopes[1], Cow::Borrowed("refresh_token")));
        assert!(matches!(&given.scopes[2], Cow::Owned(s) if s == "chatter_api"));
        let defaulted = read(serde_json::json!({"clientId": "c"}));
        assert_eq!(defaulted.scopes, ["api", "refresh_token"]);
        assert_eq!(
            serde_json::to_value(&given).expect("json")["scopes"],
            serde_json::json!(["api", "refresh_token", "chatter_api"])
        );
    }

    #[test]
    fn a_cronjob_selector_reads_and_writes_as_a_label_selector() {
        let json = serde_json::json!({"matchLabels": {"orgtokens.dev/org": "acme"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]});
        let selector: CronJobSelector = serde_json::from_value(json.clone()).expect("selector");
        assert_eq!(serde_json::to_value(&selector).expect("json"), json);
        let labels = selector
            .to_label_selector()
            .match_labels
            .unwrap_or_default();
        assert_eq!(
            labels.get("orgtokens.dev/org").map(String::as_str),
            Some("acme")
        );
        let empty: CronJobSelector = serde_json::from_value(serde_json::json!({})).expect("empty");
        assert_eq!(
            serde_json::to_value(&empty).expect("json"),
            serde_json::json!({})
        );
    }

    #[test]
    fn auth_flow_requires_exactly_one() {
        let key = SecretKeyRef {
            name: "k".into(),
            key: "tls.key".into(),
        };
        let jwt = JwtBearerAuth {
            client_id: "c".into(),
            username: "a@b.c".into(),
            private_key_ref: key,
        };
        let cases = [
            (AuthSpec::default(), Err(SpecError::AuthFlowCount(0))),
            (
                AuthSpec {
                    web_server: Some(Box::new(web())),
                    ..Default::default()
                },
                Ok(AuthFlow::WebServer(web())),
            ),
            (
                AuthSpec {
                    jwt_bearer: Some(Box::new(jwt.clone())),
                    ..Default::default()
                },
                Ok(AuthFlow::JwtBearer(jwt.clone())),
            ),
            (
                AuthSpec {
                    web_server: Some(Box::new(web())),
                    jwt_bearer: Some(Box::new(jwt)),
                    client_credentials: None,
                },
                Err(SpecError::AuthFlowCount(2)),
            ),
        ];
        for (auth, want) in cases {
            assert_eq!(auth.flow(), want, "{auth:?}");
        }
    }

    #[test]
    fn refresh_token_policy_is_checked() {
        use RefreshTokenPolicyType::*;
        let day = std::time::Duration::from_secs(86_400);
        let cases = [
            (None, Ok(TokenPolicy::ValidUntilRevoked)),
            (
                Some((ValidUntilRevoked, None)),
                Ok(TokenPolicy::ValidUntilRevoked),
            ),
            (
                Some((ExpireAfter, Some("90d"))),
                Ok(TokenPolicy::ExpireAfter(90 * day)),
            ),
            (
                Some((ExpireIfNotUsedFor, Some("30d"))),
                Ok(TokenPolicy::ExpireIfNotUsedFor(30 * day)),
            ),
            (Some((ValidUntilRevoked, Some("1d"))), Err(())),
            (Some((ExpireAfter, None)), Err(())),
            (Some((ExpireAfter, Some("90 days"))), Err(())),
        ];
        for (policy, want) in cases {
            let mut s = spec(None);
            s.refresh_token_policy = policy.map(|(type_, d)| {
                Box::new(RefreshTokenPolicy {
                    type_,
                    duration: d.map(str::to_owned),
                })
            });
            assert_eq!(s.refresh_token_policy().map_err(|_| ()), want, "{policy:?}");
        }
    }

    #[test]
    fn the_schema_checks_policy_durations_as_the_parser_reads_them() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&SalesforceOrg::crd()).unwrap_or_default();
        let rule = format!("self.matches('{}')", crate::duration::PATTERN);
        assert!(crd.contains(&rule), "{rule} missing from the CRD");
    }

    #[test]
    fn check_interval_parses_within_bounds() {
        let cases = [
            (None, Some(900)),
            (Some("1m"), Some(60)),
            (Some("1h30m"), Some(5400)),
            (Some("24h"), Some(86400)),
            (Some("59s"), None),
            (Some("25h"), None),
            (Some("-5m"), None),
            (Some("soon"), None),
        ];
        for (text, want) in cases {
            let got = spec(text).check_interval().ok().map(|d| d.as_secs());
            assert_eq!(got, want, "{text:?}");
        }
    }
}
