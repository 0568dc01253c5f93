//! The OAuth rules of the token, introspect and revoke endpoints, applied to `SimState`:
//! client authentication, the four grant types, rotation, policies and revocation.
//! Everything here is synchronous and returns Salesforce's error bodies.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::error::oauth_errors as e;
use crate::host::SfHost;
use crate::ids;
use crate::jwt::{self, EXP_LEEWAY};
use crate::spec::{PermittedUsers, TokenResponse};
use crate::state::{
    AccessToken, App, CODE_LIFETIME, Grant, MAX_GRANTS_PER_USER_APP, RefreshState, SimState, User,
    ms,
};

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";

/// Which grant authenticates the client, for the app's "require secret" settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecretUse {
    WebServer,
    Refresh,
    /// The client credentials flow: the secret is the credential.
    Always,
}

/// Form or query parameters; the first occurrence of a name wins.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: &[u8]) -> Params {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).unwrap_or_default();
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Params(map)
    }

    /// A non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Client credentials from HTTP Basic, overriding none of the body's.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientCredentials {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl ClientCredentials {
    pub fn from_request(params: &Params, authorization: Option<&str>) -> Self {
        let basic = authorization
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(a, b)| (form_decode(a), form_decode(b)))
            });
        let (basic_id, basic_secret) = match basic {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (None, None),
        };
        ClientCredentials {
            client_id: params.get("client_id").map(str::to_string).or(basic_id),
            client_secret: params
                .get("client_secret")
                .map(str::to_string)
                .or(basic_secret)
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Undoes the form-encoding RFC 6749 (2.3.1) applies to HTTP Basic client credentials.
fn form_decode(text: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
        .ok()
        .and_then(|mut pairs| pairs.pop())
        .map_or_else(|| text.to_string(), |(_, v)| v)
}

/// `base64url(sha256(verifier))` without padding.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn verifier_well_formed(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn has_refresh_scope(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| s == "refresh_token" || s == "offline_access")
}

fn without_refresh_scopes(scopes: &[String]) -> String {
    scopes
        .iter()
        .filter(|s| *s != "refresh_token" && *s != "offline_access")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

impl SimState {
    /// The token endpoint of a Salesforce whose clock is `clock_offset` seconds off the real
    /// time (it judges JWT assertions by that clock; 0 normally).
    pub fn token_request(
        &mut self,
        host: &SfHost,
        params: &Params,
        creds: &ClientCredentials,
        clock_offset: i64,
    ) -> Result<TokenResponse, OAuthError> {
        match params.get("grant_type") {
            Some(GRANT_AUTHORIZATION_CODE) => self.exchange_code(host, params, creds),
            Some(GRANT_REFRESH_TOKEN) => self.refresh(host, params, creds),
            Some(GRANT_JWT_BEARER) => self.jwt_bearer(host, params, clock_offset),
            Some(GRANT_CLIENT_CREDENTIALS) => self.client_credentials(host, creds),
            _ => Err(e::UNSUPPORTED_GRANT_TYPE),
        }
    }

    /// Consumer key must exist; a confidential app must send its secret where its settings
    /// require one, a public one must not send any, and a secret sent must be right.
    ///
    /// "Require secret for Web Server Flow" and "Require secret for Refresh Token Flow" are
    /// documented settings of both kinds of app (Salesforce Help: "Security: Require Secret
    /// for Refresh Token Flow Control" for External Client Apps, "API (Enable OAuth
    /// Settings): Require Secret for Refresh Token Flow Control" for Connected Apps), but the
    /// body of the refusal is not: `invalid_client` / `invalid client credentials` is
    /// assumed, being what Salesforce is reported to answer to a missing or wrong secret.
    fn authenticate_client(
        &self,
        creds: &ClientCredentials,
        flow: SecretUse,
    ) -> Result<&App, OAuthError> {
        let id = creds.client_id.as_deref().ok_or(e::INVALID_CLIENT_ID)?;
        let app = self.apps.get(id).ok_or(e::INVALID_CLIENT_ID)?;
        let required = match flow {
            SecretUse::WebServer => app.require_secret_for_web_server,
            SecretUse::Refresh => app.require_secret_for_refresh,
            SecretUse::Always => true,
        };
        match (&app.client_secret, &creds.client_secret) {
            (Some(_), None) if !required => Ok(app),
            (Some(_), None) => Err(e::INVALID_CLIENT_CREDENTIALS),
            (Some(expected), Some(given)) if expected != given => Err(e::AUTHENTICATION_FAILURE),
            (None, Some(_)) => Err(e::INVALID_CLIENT_CREDENTIALS),
            _ => Ok(app),
        }
    }

    /// Org-level checks shared by every grant: blocked app, installation, admin approval.
    fn check_app_access(
        &self,
        app: &App,
        user: &User,
        admin_approval_error: OAuthError,
    ) -> Result<(), OAuthError> {
        if app.blocked {
            return Err(e::APP_BLOCKED);
        }
        if app.blocked_as_uninstalled(user) {
            return Err(e::APP_NOT_INSTALLED);
        }
        if app.permitted_users == PermittedUsers::AdminApprovedPreAuthorized
            && !app.pre_authorizes(user)
        {
            return Err(admin_approval_error);
        }
        Ok(())
    }

    fn exchange_code(
        &mut self,
        host: &SfHost,
        params: &Params,
        creds: &ClientCredentials,
    ) -> Result<TokenResponse, OAuthError> {
        let client_id = self
            .authenticate_client(creds, SecretUse::WebServer)?
            .client_id
            .clone();
        let code_value = params.get("code").ok_or(e::INVALID_CODE)?;
        let code = self.codes.get(code_value).cloned().ok_or(e::INVALID_CODE)?;
        if code.client_id != client_id {
            return Err(e::INVALID_CODE);
        }
        let now = self.now();
        if now >= code.issued_at.saturating_add(ms(CODE_LIFETIME)) {
            self.codes.remove(code_value);
            return Err(e::EXPIRED_CODE);
        }
        let user = self
            .users
            .get(&code.user_id)
            .cloned()
            .ok_or(e::INVALID_CODE)?;
        let org = self.org(user.org).cloned().ok_or(e::INVALID_CODE)?;
        if !host.admits(&org) {
            return Err(e::INVALID_CODE);
        }
        if params.get("redirect_uri") != Some(code.redirect_uri.as_str()) {
            return Err(e::REDIRECT_MISMATCH);
        }
        if let Some(challenge) = &code.code_challenge {
            let verifier = params
                .get("code_verifier")
                .ok_or(e::MISSING_CODE_VERIFIER)?;
            if !verifier_well_formed(verifier) || pkce_challenge(verifier) != *challenge {
                return Err(e::WRONG_CODE_VERIFIER);
            }
        }
        // Codes are single-use: consumed as soon as they pass the checks above.
        self.codes.remove(code_value);
        if !user.active {
            return Err(e::INACTIVE_USER);
        }
        Ok(self.issue(
            &user.id,
            &client_id,
            &code.scope,
            has_refresh_scope(&code.scope),
        ))
    }

    fn refresh(
        &mut self,
        host: &SfHost,
        params: &Params,
        creds: &ClientCredentials,
    ) -> Result<TokenResponse, OAuthError> {
        let client_id = self
            .authenticate_client(creds, SecretUse::Refresh)?
            .client_id
            .clone();
        let token = params.get("refresh_token").ok_or(e::EXPIRED_TOKEN)?;
        let (grant_id, status) = *self.refresh_index.get(token).ok_or(e::EXPIRED_TOKEN)?;
        let grant = self
            .grants
            .get(&grant_id)
            .cloned()
            .ok_or(e::EXPIRED_TOKEN)?;
        if grant.client_id != client_id {
            return Err(e::EXPIRED_TOKEN);
        }
        if status == RefreshState::RotatedOut {
            // Reuse of a rotated-out token: the whole grant is revoked.
            self.revoke_grant(grant_id);
            return Err(e::EXPIRED_TOKEN);
        }
        let now = self.now();
        if grant.revoked {
            return Err(e::EXPIRED_TOKEN);
        }
        if self.grant_policy_expired(&grant, now) {
            self.revoke_grant(grant_id);
            return Err(e::EXPIRED_TOKEN);
        }
        let user = self
            .users
            .get(&grant.user_id)
            .cloned()
            .ok_or(e::EXPIRED_TOKEN)?;
        let org = self.org(user.org).cloned().ok_or(e::EXPIRED_TOKEN)?;
        if org.id != grant.org_id || !host.admits(&org) {
            return Err(e::EXPIRED_TOKEN);
        }
        if !user.active {
            return Err(e::INACTIVE_USER);
        }
        let app = self.apps.get(&client_id).ok_or(e::INVALID_CLIENT_ID)?;
        self.check_app_access(app, &user, e::INVALID_APP_ACCESS)?;
        let rotate = app.rotation;

        let access = self.issue_access(&user.id, &client_id, &org.id, Some(grant_id), &grant.scope);
        let new_refresh = if rotate {
            let fresh = ids::refresh_token();
            self.refresh_index
                .insert(token.to_string(), (grant_id, RefreshState::RotatedOut));
            self.refresh_index
                .insert(fresh.clone(), (grant_id, RefreshState::Current));
            Some(fresh)
        } else {
            None
        };
        if let Some(g) = self.grants.get_mut(&grant_id) {
            g.last_used = now;
            if let Some(fresh) = &new_refresh {
                g.refresh_token = fresh.clone();
            }
        }
        Ok(self.response(&user.id, &client_id, access, new_refresh, &grant.scope, now))
    }

    fn jwt_bearer(
        &mut self,
        host: &SfHost,
        params: &Params,
        clock_offset: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let assertion = params.get("assertion").ok_or(e::INVALID_ASSERTION)?;
        let claims = jwt::peek(assertion).map_err(|_| e::INVALID_ASSERTION)?;
        let client_id = claims.iss.as_deref().ok_or(e::INVALID_CLIENT_ID)?;
        let app = self.apps.get(client_id).ok_or(e::INVALID_CLIENT_ID)?;
        let key = app
            .jwt_public_key_pem
            .as_deref()
            .ok_or(e::INVALID_ASSERTION)?;
        jwt::verify_signature(assertion, key).map_err(|_| e::INVALID_ASSERTION)?;
        let exp = claims.exp.ok_or(e::INVALID_ASSERTION)?;
        let now = jwt::wall_clock_secs().saturating_add_signed(clock_offset);
        if now > exp.saturating_add(EXP_LEEWAY.as_secs()) {
            return Err(e::EXPIRED_CODE);
        }
        let user = claims
            .sub
            .as_deref()
            .and_then(|u| self.user_by_username(u))
            .cloned()
            .ok_or(e::NOT_APPROVED)?;
        let org = self.org(user.org).cloned().ok_or(e::NOT_APPROVED)?;
        if !claims
            .aud
            .as_ref()
            .is_some_and(|a| a.contains(org.kind.login_url()))
        {
            return Err(e::AUDIENCE_INVALID);
        }
        if !host.admits(&org) {
            return Err(e::NOT_APPROVED);
        }
        if !user.active {
            return Err(e::INACTIVE_USER);
        }
        self.check_app_access(app, &user, e::NOT_APPROVED)?;
        let approved = app.pre_authorizes(&user)
            || self
                .consents
                .contains(&(user.id.clone(), app.client_id.clone()));
        if !approved {
            return Err(e::NOT_APPROVED);
        }
        let scope = without_refresh_scopes(&app.scopes);
        let client_id = app.client_id.clone();
        Ok(self.issue(&user.id, &client_id, &scope, false))
    }

    fn client_credentials(
        &mut self,
        host: &SfHost,
        creds: &ClientCredentials,
    ) -> Result<TokenResponse, OAuthError> {
        let SfHost::MyDomain(domain) = host else {
            return Err(e::NOT_SUPPORTED_ON_DOMAIN);
        };
        let (org_key, _) = self.org_by_host(domain).ok_or(e::NOT_SUPPORTED_ON_DOMAIN)?;
        let app = self.authenticate_client(creds, SecretUse::Always)?;
        if app.client_secret.is_none() {
            return Err(e::INVALID_CLIENT_CREDENTIALS);
        }
        let user = app
            .run_as
            .as_ref()
            .and_then(|id| self.users.get(id))
            .filter(|u| u.org == org_key)
            .cloned()
            .ok_or(e::NO_CLIENT_CREDENTIALS_USER)?;
        if !user.active {
            return Err(e::INACTIVE_USER);
        }
        if app.blocked {
            return Err(e::APP_BLOCKED);
        }
        if app.blocked_as_uninstalled(&user) {
            return Err(e::APP_NOT_INSTALLED);
        }
        let scope = without_refresh_scopes(&app.scopes);
        let client_id = app.client_id.clone();
        Ok(self.issue(&user.id, &client_id, &scope, false))
    }

    /// Issues an access token, and a new grant with a refresh token when asked.
    /// Used by the flows above and by the control surface's "mint tokens".
    pub fn issue(
        &mut self,
        user_id: &str,
        client_id: &str,
        scope: &str,
        with_refresh: bool,
    ) -> TokenResponse {
        let now = self.now();
        let org_id = self
            .users
            .get(user_id)
            .and_then(|u| self.org(u.org))
            .map(|o| o.id.clone())
            .unwrap_or_default();
        let (grant, refresh) = if with_refresh {
            let (id, token) = self.new_grant(user_id, client_id, &org_id, scope, now);
            (Some(id), Some(token))
        } else {
            (None, None)
        };
        let access = self.issue_access(user_id, client_id, &org_id, grant, scope);
        self.response(user_id, client_id, access, refresh, scope, now)
    }

    fn new_grant(
        &mut self,
        user_id: &str,
        client_id: &str,
        org_id: &str,
        scope: &str,
        now: u64,
    ) -> (u64, String) {
        // Grant ids grow with time, so the smallest id is the oldest approval.
        let mut of_user = self.grants_of_user.remove(user_id).unwrap_or_default();
        of_user.retain(|id| self.grants.contains_key(id));
        let mut live: Vec<u64> = of_user
            .iter()
            .filter(|id| {
                self.grants
                    .get(id)
                    .is_some_and(|g| g.client_id == client_id && self.grant_alive(g, now))
            })
            .copied()
            .collect();
        live.sort_unstable();
        while live.len() >= MAX_GRANTS_PER_USER_APP {
            let oldest = live.remove(0);
            self.revoke_grant(oldest);
        }
        let id = self.new_grant_id();
        of_user.retain(|id| self.grants.contains_key(id));
        of_user.push(id);
        self.grants_of_user.insert(user_id.to_string(), of_user);
        let token = ids::refresh_token();
        self.grants.insert(
            id,
            Grant {
                user_id: user_id.to_string(),
                client_id: client_id.to_string(),
                org_id: org_id.to_string(),
                scope: scope.to_string(),
                created_at: now,
                last_used: now,
                refresh_token: token.clone(),
                revoked: false,
            },
        );
        self.refresh_index
            .insert(token.clone(), (id, RefreshState::Current));
        (id, token)
    }

    fn issue_access(
        &mut self,
        user_id: &str,
        client_id: &str,
        org_id: &str,
        grant: Option<u64>,
        scope: &str,
    ) -> String {
        let now = self.now();
        let token = ids::access_token(org_id);
        self.access_tokens.insert(
            token.clone(),
            AccessToken {
                user_id: user_id.to_string(),
                client_id: client_id.to_string(),
                org_id: org_id.to_string(),
                grant,
                scope: scope.to_string(),
                issued_at: now,
                last_used: now,
                revoked: false,
            },
        );
        token
    }

    /// `https://login|test.salesforce.com/id/<orgId>/<userId>`.
    pub fn identity_url(&self, user_id: &str) -> String {
        self.users
            .get(user_id)
            .and_then(|u| self.org(u.org).map(|o| (u, o)))
            .map(|(u, o)| format!("{}/id/{}/{}", o.kind.login_url(), o.id, u.id))
            .unwrap_or_default()
    }

    fn response(
        &self,
        user_id: &str,
        client_id: &str,
        access_token: String,
        refresh_token: Option<String>,
        scope: &str,
        now: u64,
    ) -> TokenResponse {
        let id = self.identity_url(user_id);
        let instance_url = self
            .users
            .get(user_id)
            .and_then(|u| self.org(u.org))
            .map(|o| o.instance_url())
            .unwrap_or_default();
        let issued_at = now.to_string();
        let key = self
            .apps
            .get(client_id)
            .and_then(|a| a.client_secret.clone())
            .unwrap_or_else(|| self.signing_key.clone());
        let signature = match <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
            Ok(mut mac) => {
                mac.update(id.as_bytes());
                mac.update(issued_at.as_bytes());
                STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        TokenResponse {
            access_token,
            refresh_token,
            signature,
            scope: scope.to_string(),
            instance_url,
            id,
            token_type: "Bearer".to_string(),
            issued_at,
        }
    }

    /// Validates an access token and records the activity (which extends the session).
    pub fn use_access_token(&mut self, token: &str) -> Option<AccessToken> {
        let now = self.now();
        let alive = self
            .access_tokens
            .get(token)
            .is_some_and(|t| self.access_token_alive(t, now));
        if !alive {
            return None;
        }
        let t = self.access_tokens.get_mut(token)?;
        t.last_used = now;
        Some(t.clone())
    }

    /// The introspection endpoint's body.
    pub fn introspect(
        &self,
        params: &Params,
        creds: &ClientCredentials,
    ) -> Result<Value, OAuthError> {
        let app = self.authenticate_client(creds, SecretUse::Always)?;
        let inactive = json!({ "active": false });
        let Some(token) = params.get("token") else {
            return Ok(inactive);
        };
        let now = self.now();
        if let Some(t) = self.access_tokens.get(token) {
            if t.client_id != app.client_id || !self.access_token_alive(t, now) {
                return Ok(inactive);
            }
            let timeout = ms(app.session_timeout);
            return Ok(self.introspection_body(
                &t.scope,
                &t.client_id,
                &t.user_id,
                "access_token",
                Some(t.last_used.saturating_add(timeout)),
                t.issued_at,
            ));
        }
        if let Some((grant_id, RefreshState::Current)) = self.refresh_index.get(token)
            && let Some(g) = self.grants.get(grant_id)
            && g.client_id == app.client_id
            && self.grant_alive(g, now)
        {
            return Ok(self.introspection_body(
                &g.scope,
                &g.client_id,
                &g.user_id,
                "refresh_token",
                self.grant_expiry(g),
                g.created_at,
            ));
        }
        Ok(inactive)
    }

    fn introspection_body(
        &self,
        scope: &str,
        client_id: &str,
        user_id: &str,
        token_type: &str,
        exp: Option<u64>,
        issued: u64,
    ) -> Value {
        let username = self
            .users
            .get(user_id)
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let mut body = json!({
            "active": true,
            "scope": scope,
            "client_id": client_id,
            "username": username,
            "sub": self.identity_url(user_id),
            "token_type": token_type,
            "iat": issued / 1000,
            "nbf": issued / 1000,
        });
        if let (Some(exp), Some(map)) = (exp, body.as_object_mut()) {
            map.insert("exp".into(), json!(exp / 1000));
        }
        body
    }

    /// The revocation endpoint: an access token dies alone, a refresh token takes its
    /// grant's access tokens with it.
    pub fn revoke(&mut self, params: &Params) -> Result<(), OAuthError> {
        if let Some(hint) = params.get("token_type_hint")
            && hint != "access_token"
            && hint != "refresh_token"
        {
            return Err(e::UNSUPPORTED_TOKEN_TYPE);
        }
        let token = params.get("token").ok_or(e::INVALID_TOKEN)?;
        let now = self.now();
        if let Some(t) = self.access_tokens.get(token) {
            if !self.access_token_alive(t, now) {
                return Err(e::INVALID_TOKEN);
            }
            if let Some(t) = self.access_tokens.get_mut(token) {
                t.revoked = true;
            }
            return Ok(());
        }
        let (grant_id, _) = *self.refresh_index.get(token).ok_or(e::INVALID_TOKEN)?;
        if self.grants.get(&grant_id).is_none_or(|g| g.revoked) {
            return Err(e::INVALID_TOKEN);
        }
        self.revoke_grant(grant_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_openssl() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ92K9yvVxZ39Pka0rvS6yD4bjbT1k"),
            "paaAW4Eeg4rO5Ym2w_xvwm8hUbb2WLqDLagpFlIT-yI"
        );
    }

    #[test]
    fn params_first_value_wins() {
        let p = Params::parse(b"a=1&a=2&b=&c=x+y");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert!(p.has("b"));
        assert_eq!(p.get("c"), Some("x y"));
    }
}
