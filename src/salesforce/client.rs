//! The HTTP client for Salesforce: [`HttpSalesforce`] implements [`Salesforce`] over one
//! `reqwest` client.
//!
//! Every request goes through [`HttpSalesforce::send`], which checks the URL against the
//! [`HostAllowlist`] before anything leaves the process, and every answer goes through
//! [`classify`]. The refresh, client-credentials and authorization-code grants are built by
//! the `oauth2` crate, sent through a small [`AsyncHttpClient`] over our client so the HTTP
//! status and body of a failure reach the classifier; the JWT bearer grant, userinfo and
//! revocation are plain form posts and GETs. Token values live in [`SecretString`] and are
//! never logged: tracing fields carry only host, endpoint and outcome.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenUrl,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, DATE, HeaderMap};
use serde::{Deserialize, Serialize};
use url::Url;

use super::allowlist::{HostAllowlist, HostError};
use super::classify::{self, Resource};
use super::{AppCredentials, Identity, Salesforce, SfError, TokenResponse, TransientReason};
use crate::clock::Clock;
use crate::secret::SecretString;

/// `/services/oauth2/authorize`.
pub const AUTHORIZE_PATH: &str = "/services/oauth2/authorize";
/// `/services/oauth2/token`.
pub const TOKEN_PATH: &str = "/services/oauth2/token";
/// `/services/oauth2/userinfo`.
pub const USERINFO_PATH: &str = "/services/oauth2/userinfo";
/// `/services/oauth2/revoke`.
pub const REVOKE_PATH: &str = "/services/oauth2/revoke";

/// The JWT bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Production JWT audience.
pub const PRODUCTION_AUDIENCE: &str = "https://login.salesforce.com";
/// Sandbox JWT audience.
pub const SANDBOX_AUDIENCE: &str = "https://test.salesforce.com";

/// How far ahead a JWT assertion expires; Salesforce tolerates only a few minutes.
const JWT_LIFETIME: Duration = Duration::from_secs(180);

/// Largest response body read; Salesforce's answers are a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Reads the PEM file given with `--extra-ca-file`, if any, with an error that names it.
pub fn read_extra_ca(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    path.map(|path| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read --extra-ca-file {}: {e}", path.display()))
    })
    .transpose()
}

/// How the Salesforce client connects.
#[derive(Clone)]
pub struct HttpSettings {
    /// Time allowed to open the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, response body included.
    pub timeout: Duration,
    /// An HTTP(S) proxy for Salesforce traffic only (`http://proxy:3128`, credentials allowed
    /// in the URL). `None`: the standard proxy environment variables apply.
    pub proxy: Option<String>,
    /// Extra trusted CA certificates (PEM, one or more), for TLS-inspecting proxies.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Hosts that may receive credentials.
    pub allowlist: HostAllowlist,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The clock JWT assertions are dated by (the system clock; shifted only to rehearse skew).
    pub clock: Clock,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            proxy: None,
            extra_ca_pem: None,
            allowlist: HostAllowlist::default(),
            user_agent: concat!("sforg-operator/", env!("CARGO_PKG_VERSION")).to_owned(),
            clock: Clock::system(),
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URL may carry credentials.
        f.debug_struct("HttpSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy.as_ref().map(|_| "[configured]"))
            .field("extra_ca_pem", &self.extra_ca_pem.as_ref().map(Vec::len))
            .field("allowlist", &self.allowlist)
            .field("user_agent", &self.user_agent)
            .field("clock", &self.clock)
            .finish()
    }
}

/// Why the Salesforce client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The proxy URL does not parse or has an unsupported scheme.
    #[error(
        "the Salesforce proxy URL is not usable ({0}); give a URL such as http://proxy.example:3128"
    )]
    Proxy(String),
    /// The extra CA bundle is not PEM certificates.
    #[error(
        "the extra CA bundle for Salesforce is not usable ({0}); give one or more PEM \"-----BEGIN CERTIFICATE-----\" blocks"
    )]
    CaBundle(String),
    /// reqwest refused the configuration.
    #[error("could not build the HTTP client for Salesforce: {0}")]
    Build(String),
}

/// A re-authorization link and the PKCE verifier to keep (secretly) for the code exchange.
#[derive(Clone, Debug)]
pub struct AuthorizeLink {
    /// The URL to open in a browser.
    pub url: String,
    /// The PKCE code verifier matching the link's `code_challenge`.
    pub pkce_verifier: SecretString,
}

/// `base_url`'s origin with `path`, after checking it may receive credentials.
pub fn oauth_url(allowlist: &HostAllowlist, base_url: &str, path: &str) -> Result<Url, HostError> {
    let mut url = allowlist.check(base_url)?;
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The JWT `aud` for a login URL: the sandbox audience for `test.salesforce.com` and sandbox
/// My Domains, else production.
pub fn jwt_audience(login_url: &Url) -> &'static str {
    let host = login_url
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        SANDBOX_AUDIENCE
    } else {
        PRODUCTION_AUDIENCE
    }
}

/// The authorization-code link with PKCE (S256) for a person to re-authorize an org.
/// `state` is echoed back on the redirect; `login_hint` pre-fills the username.
pub fn authorize_url(
    allowlist: &HostAllowlist,
    login_url: &str,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[&str],
    state: &str,
    login_hint: Option<&str>,
) -> Result<AuthorizeLink, HostError> {
    let (_, verifier) = PkceCodeChallenge::new_random_sha256();
    let pkce_verifier = SecretString::new(verifier.secret().clone());
    let request = AuthorizeRequest {
        login_url,
        client_id,
        redirect_uri,
        scopes,
        state,
        login_hint,
        prompt: None,
    };
    Ok(AuthorizeLink {
        url: authorize_url_with(allowlist, &request, &pkce_verifier)?,
        pkce_verifier,
    })
}

/// The parameters of an authorization-code link.
#[derive(Clone, Copy, Debug)]
pub struct AuthorizeRequest<'a> {
    /// The org's login URL.
    pub login_url: &'a str,
    /// The consumer key of the Connected App or External Client App.
    pub client_id: &'a str,
    /// The callback URL configured in the Connected App or External Client App.
    pub redirect_uri: &'a str,
    /// Scopes to ask for.
    pub scopes: &'a [&'a str],
    /// Echoed back on the redirect.
    pub state: &'a str,
    /// Pre-fills the username.
    pub login_hint: Option<&'a str>,
    /// `login`, `consent` or both, space separated.
    pub prompt: Option<&'a str>,
}

/// The authorization-code link for a PKCE verifier the caller keeps (or can derive again),
/// with its S256 challenge.
pub fn authorize_url_with(
    allowlist: &HostAllowlist,
    request: &AuthorizeRequest<'_>,
    pkce_verifier: &SecretString,
) -> Result<String, HostError> {
    let auth = oauth_url(allowlist, request.login_url, AUTHORIZE_PATH)?;
    let redirect = RedirectUrl::new(request.redirect_uri.to_owned())
        .map_err(|_| HostError::Invalid(request.redirect_uri.to_owned()))?;
    let client = oauth2::basic::BasicClient::new(ClientId::new(request.client_id.to_owned()))
        .set_auth_uri(AuthUrl::from_url(auth))
        .set_redirect_uri(redirect);
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
        pkce_verifier.expose().to_owned(),
    ));
    let state = request.state.to_owned();
    let mut builder = client
        .authorize_url(move || CsrfToken::new(state))
        .add_scopes(request.scopes.iter().map(|s| Scope::new((*s).to_owned())))
        .set_pkce_challenge(challenge);
    if let Some(hint) = request.login_hint {
        builder = builder.add_extra_param("login_hint", hint);
    }
    if let Some(prompt) = request.prompt {
        builder = builder.add_extra_param("prompt", prompt);
    }
    let (url, _) = builder.url();
    Ok(url.into())
}

/// Salesforce's fields beyond RFC 6749 in a token response. (`scope` is parsed by `oauth2`
/// itself.)
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SalesforceTokenFields {
    /// The API host.
    pub instance_url: String,
    /// The identity URL.
    pub id: String,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    pub issued_at: Option<String>,
    /// HMAC of `id` and `issued_at` with the consumer secret.
    #[serde(default)]
    pub signature: Option<String>,
}

impl ExtraTokenFields for SalesforceTokenFields {}

type SfTokenResponse = StandardTokenResponse<SalesforceTokenFields, BasicTokenType>;

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    SfTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Salesforce over HTTPS.
#[derive(Clone)]
pub struct HttpSalesforce {
    http: reqwest::Client,
    allowlist: HostAllowlist,
    clock: Clock,
}

impl fmt::Debug for HttpSalesforce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // reqwest's Debug would print the proxy, which may carry credentials.
        f.debug_struct("HttpSalesforce")
            .field("allowlist", &self.allowlist)
            .finish_non_exhaustive()
    }
}

/// A response as read from the wire.
struct Received {
    status: reqwest::StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// The server's clock from the `Date` header, in seconds since the Unix epoch.
    fn date(&self) -> Option<i64> {
        let text = self.headers.get(DATE)?.to_str().ok()?;
        parse_http_date(text)
    }

    /// A token endpoint answer as tokens, or what went wrong.
    fn into_tokens(self) -> Result<TokenResponse, SfError> {
        classify::token_response(self.status.as_u16(), self.content_type(), &self.body)?;
        parse_token_response(&self.body)
    }
}

/// An HTTP `Date` (`Sun, 06 Nov 1994 08:49:37 GMT`) in seconds since the Unix epoch.
pub fn parse_http_date(text: &str) -> Option<i64> {
    k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text.trim())
        .ok()
        .map(|t| t.as_second())
}

/// Below this, a clock difference cannot explain an assertion refused as expired.
const MIN_SKEW_SECS: i64 = 60;

/// The most skew corrected by dating an assertion by Salesforce's `Date` header. An endpoint
/// claiming a later date could otherwise obtain an assertion that stays valid far into the
/// future; a real clock that far off needs fixing anyway.
pub const MAX_CORRECTED_SKEW: Duration = Duration::from_secs(600);

/// The `Date` header counts whole seconds and arrives a moment after the assertion was
/// signed, so a skew of exactly [`MAX_CORRECTED_SKEW`] can read this much more.
const DATE_ROUNDING_SECS: i64 = 2;

/// The date to sign a second assertion with, after Salesforce refused one dated `ours` as
/// expired and answered with `theirs` in its `Date` header; or why no second one is signed.
pub fn redate_assertion(ours: i64, theirs: Option<i64>) -> Result<i64, SfError> {
    let Some(theirs) = theirs else {
        return Err(clock_skew(None));
    };
    let behind = theirs.saturating_sub(ours);
    if behind < MIN_SKEW_SECS {
        return Err(clock_skew(Some(behind)));
    }
    let max = MAX_CORRECTED_SKEW.as_secs() as i64;
    if behind > max + DATE_ROUNDING_SECS {
        return Err(SfError::Transient {
            reason: TransientReason::ClockSkew,
            detail: format!(
                "Salesforce refused the JWT assertion as expired and its Date header is about \
                 {behind} s ahead of this machine's clock, more than the {max} s the operator \
                 corrects by dating an assertion by Salesforce's clock, so no assertion was \
                 signed with that date"
            ),
        });
    }
    Ok(theirs)
}

/// A JWT assertion refused as expired because of the clocks; `behind` is how far this
/// machine's clock is behind Salesforce's, when the answer said.
fn clock_skew(behind: Option<i64>) -> SfError {
    let detail = match behind {
        Some(secs) if secs >= MIN_SKEW_SECS => format!(
            "Salesforce refused the JWT assertion as expired: this machine's clock is about \
             {secs} s behind Salesforce's"
        ),
        _ => "Salesforce refused the JWT assertion as expired although it was just signed: \
              the clocks of this machine and Salesforce disagree"
            .to_owned(),
    };
    SfError::Transient {
        reason: TransientReason::ClockSkew,
        detail,
    }
}

impl HttpSalesforce {
    /// Builds the one HTTP client used for all Salesforce traffic.
    pub fn new(settings: HttpSettings) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(settings.user_agent)
            // A redirect could carry a form post to another host; OAuth needs none.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(proxy) = &settings.proxy {
            // Parsed here so that the error never echoes the URL and its credentials.
            let parsed = Url::parse(proxy).map_err(|e| ClientError::Proxy(e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ClientError::Proxy(format!(
                    "scheme {:?} is not supported, use http or https",
                    parsed.scheme()
                )));
            }
            let proxy = reqwest::Proxy::all(parsed)
                .map_err(|_| ClientError::Proxy("reqwest rejected it".to_owned()))?;
            builder = builder.proxy(proxy);
        }
        if let Some(pem) = &settings.extra_ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::CaBundle(e.to_string()))?;
            if certificates.is_empty() {
                return Err(ClientError::CaBundle(
                    "it contains no certificate".to_owned(),
                ));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            allowlist: settings.allowlist,
            clock: settings.clock,
        })
    }

    /// The hosts that may receive credentials.
    pub fn allowlist(&self) -> &HostAllowlist {
        &self.allowlist
    }

    /// [`authorize_url`] with this client's allowlist.
    pub fn authorize_link(
        &self,
        login_url: &str,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[&str],
        state: &str,
        login_hint: Option<&str>,
    ) -> Result<AuthorizeLink, HostError> {
        authorize_url(
            &self.allowlist,
            login_url,
            client_id,
            redirect_uri,
            scopes,
            state,
            login_hint,
        )
    }

    /// Opens the authorize endpoint as a browser would, without logging in, and reads what
    /// it answers: the first leg of the web server flow, which checks the consumer key, the
    /// callback URL, the scopes and PKCE before anyone logs in. Nothing is authorized.
    pub async fn probe_authorize(
        &self,
        request: &AuthorizeRequest<'_>,
    ) -> Result<classify::AuthorizeAnswer, SfError> {
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        let verifier = SecretString::new(verifier.secret().clone());
        let url = authorize_url_with(&self.allowlist, request, &verifier)?;
        let request = self
            .http
            .get(url)
            .header(ACCEPT, "text/html")
            .build()
            .map_err(|e| classify::transport_error(&e))?;
        let received = self.send(request).await?;
        let location = received
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        classify::authorize_answer(received.status.as_u16(), location, &received.body)
    }

    fn url(&self, base_url: &str, path: &str) -> Result<Url, SfError> {
        Ok(oauth_url(&self.allowlist, base_url, path)?)
    }

    /// The single exit: checks the host, sends, reads a bounded body. Transport failures
    /// are classified here; HTTP statuses are left to the caller.
    async fn send(&self, request: reqwest::Request) -> Result<Received, SfError> {
        let url = self.allowlist.check(request.url().as_str())?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let endpoint = url.path().to_owned();
        let result = self.exchange(request).await;
        match &result {
            Ok(received) => tracing::debug!(
                host,
                endpoint,
                status = received.status.as_u16(),
                "Salesforce answered"
            ),
            Err(error) => tracing::debug!(host, endpoint, %error, "Salesforce call failed"),
        }
        result
    }

    async fn exchange(&self, request: reqwest::Request) -> Result<Received, SfError> {
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|e| classify::transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify::transport_error(&e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(classify::unexpected(&format!(
                    "HTTP {status} with a body larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Received {
            status,
            headers,
            body,
        })
    }

    fn oauth_client(&self, login_url: &str, app: &AppCredentials) -> Result<OAuthClient, SfError> {
        let token_url = self.url(login_url, TOKEN_PATH)?;
        let client = oauth2::Client::new(ClientId::new(app.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(token_url));
        Ok(match &app.client_secret {
            Some(secret) => client.set_client_secret(ClientSecret::new(secret.expose().to_owned())),
            None => client,
        })
    }

    /// POSTs a form to a token-ish endpoint.
    /// Signs a JWT bearer assertion dated `now` (seconds since the epoch) and posts it.
    async fn post_assertion(
        &self,
        url: &Url,
        key: &jsonwebtoken::EncodingKey,
        client_id: &str,
        username: &str,
        now: i64,
    ) -> Result<Received, SfError> {
        let exp = now.saturating_add(JWT_LIFETIME.as_secs() as i64).max(0) as u64;
        let claims = JwtClaims {
            iss: client_id,
            sub: username,
            aud: jwt_audience(url),
            exp,
        };
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .map_err(|e| SfError::BadPrivateKey(e.to_string()))?;
        self.post_form(
            url.clone(),
            &[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)],
        )
        .await
    }

    async fn post_form(&self, url: Url, form: &[(&str, &str)]) -> Result<Received, SfError> {
        let request = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .form(form)
            .build()
            .map_err(|e| classify::transport_error(&e))?;
        self.send(request).await
    }
}

/// An `oauth2` HTTP client over [`HttpSalesforce::send`] that hands oauth2 only successful
/// token responses: any failure is already an [`SfError`], so no status is lost.
struct TokenTransport<'a>(&'a HttpSalesforce);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Classified(SfError);

impl<'c> AsyncHttpClient<'c> for TokenTransport<'_> {
    type Error = Classified;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Classified>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(|e| {
                Classified(classify::unexpected(&format!(
                    "could not prepare the token request: {e}"
                )))
            })?;
            let received = self.0.send(request).await.map_err(Classified)?;
            classify::token_response(
                received.status.as_u16(),
                received.content_type(),
                &received.body,
            )
            .map_err(Classified)?;
            let mut response = HttpResponse::new(received.body);
            *response.status_mut() = received.status;
            *response.headers_mut() = received.headers;
            Ok(response)
        })
    }
}

fn from_oauth2(error: RequestTokenError<Classified, BasicErrorResponse>) -> SfError {
    match error {
        RequestTokenError::Request(Classified(e)) => e,
        // Not reached while TokenTransport filters failures; kept for completeness.
        RequestTokenError::ServerResponse(response) => classify::token_error(
            response.error().as_ref(),
            response.error_description().map_or("", String::as_str),
        ),
        RequestTokenError::Parse(error, _) => classify::unexpected(&format!(
            "the token response is not what Salesforce sends (at {}: {})",
            error.path(),
            json_error_summary(error.inner())
        )),
        RequestTokenError::Other(message) => classify::unexpected(&message),
    }
}

/// A serde_json error without the offending value (it could be a token).
fn json_error_summary(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.starts_with("missing field") {
        message
    } else {
        format!(
            "{:?} error at line {} column {}",
            error.classify(),
            error.line(),
            error.column()
        )
    }
}

fn into_token_response(response: SfTokenResponse) -> TokenResponse {
    use oauth2::TokenResponse as _;
    let extra = response.extra_fields();
    TokenResponse {
        access_token: SecretString::new(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::new(t.secret().clone())),
        instance_url: extra.instance_url.clone(),
        id: extra.id.clone(),
        issued_at: extra.issued_at.clone(),
    }
}

fn parse_token_response(body: &[u8]) -> Result<TokenResponse, SfError> {
    serde_json::from_slice::<SfTokenResponse>(body)
        .map(into_token_response)
        .map_err(|e| {
            classify::unexpected(&format!(
                "the token response is not what Salesforce sends ({})",
                json_error_summary(&e)
            ))
        })
}

#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

#[derive(Deserialize)]
struct UserInfo {
    organization_id: String,
    user_id: String,
    preferred_username: String,
}

impl Salesforce for HttpSalesforce {
    async fn userinfo(
        &self,
        instance_url: &str,
        access_token: &SecretString,
    ) -> Result<Identity, SfError> {
        let url = self.url(instance_url, USERINFO_PATH)?;
        let request = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .bearer_auth(access_token.expose())
            .build()
            .map_err(|e| classify::transport_error(&e))?;
        let received = self.send(request).await?;
        classify::resource_response(
            Resource::Userinfo,
            received.status.as_u16(),
            received.content_type(),
            &received.body,
        )?;
        let info: UserInfo = serde_json::from_slice(&received.body).map_err(|e| {
            classify::unexpected(&format!(
                "the userinfo response is not what Salesforce sends ({})",
                json_error_summary(&e)
            ))
        })?;
        Ok(Identity {
            org_id: info.organization_id,
            user_id: info.user_id,
            username: info.preferred_username,
        })
    }

    async fn refresh(
        &self,
        login_url: &str,
        app: &AppCredentials,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        let client = self.oauth_client(login_url, app)?;
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        client
            .exchange_refresh_token(&token)
            .request_async(&TokenTransport(self))
            .await
            .map(into_token_response)
            .map_err(|e| {
                classify::refine_for_secret(
                    from_oauth2(e),
                    app.client_secret.is_some(),
                    classify::SecretFlow::Refresh,
                )
            })
    }

    async fn jwt_bearer(
        &self,
        login_url: &str,
        client_id: &str,
        username: &str,
        private_key_pem: &SecretString,
    ) -> Result<TokenResponse, SfError> {
        let url = self.url(login_url, TOKEN_PATH)?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|e| SfError::BadPrivateKey(e.to_string()))?;
        let ours = self.clock.unix_seconds();
        let received = self
            .post_assertion(&url, &key, client_id, username, ours)
            .await?;
        if !classify::expired_assertion(received.status.as_u16(), &received.body) {
            return received.into_tokens();
        }
        // Refused as expired although fresh by our clock: it is behind Salesforce's. Nothing
        // is wrong with the authorization, so sign once more dated by Salesforce's own clock
        // (the answer's Date header) rather than leave the org without a token.
        // Bounded: see MAX_CORRECTED_SKEW.
        let theirs = redate_assertion(ours, received.date())?;
        let behind = theirs - ours;
        tracing::warn!(
            seconds_behind = behind,
            "this machine's clock is behind Salesforce's: dating the JWT assertion by Salesforce's clock; fix the node's time synchronization"
        );
        let retried = self
            .post_assertion(&url, &key, client_id, username, theirs)
            .await?;
        if classify::expired_assertion(retried.status.as_u16(), &retried.body) {
            return Err(clock_skew(Some(behind)));
        }
        retried.into_tokens()
    }

    async fn client_credentials(
        &self,
        login_url: &str,
        app: &AppCredentials,
    ) -> Result<TokenResponse, SfError> {
        // Salesforce refuses this grant on its shared login hosts; say so without asking
        // (the schema refuses these too, but an org may predate it).
        let token_url = self.url(login_url, TOKEN_PATH)?;
        if matches!(
            token_url.host_str(),
            Some("login.salesforce.com" | "test.salesforce.com")
        ) {
            return Err(SfError::NotMyDomain {
                description: "request not supported on this domain".to_owned(),
            });
        }
        let client = self.oauth_client(login_url, app)?;
        client
            .exchange_client_credentials()
            .request_async(&TokenTransport(self))
            .await
            .map(into_token_response)
            .map_err(from_oauth2)
    }

    async fn exchange_code(
        &self,
        login_url: &str,
        app: &AppCredentials,
        code: &SecretString,
        pkce_verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenResponse, SfError> {
        let client = self.oauth_client(login_url, app)?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| HostError::Invalid(redirect_uri.to_owned()))?;
        client
            .exchange_code(AuthorizationCode::new(code.expose().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().to_owned()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&TokenTransport(self))
            .await
            .map(into_token_response)
            .map_err(|e| {
                classify::refine_for_secret(
                    from_oauth2(e),
                    app.client_secret.is_some(),
                    classify::SecretFlow::WebServer,
                )
            })
    }

    async fn revoke(&self, login_url: &str, token: &SecretString) -> Result<(), SfError> {
        // A plain post: revocation needs only the token, and oauth2 would add a client id.
        let url = self.url(login_url, REVOKE_PATH)?;
        let received = self.post_form(url, &[("token", token.expose())]).await?;
        classify::revoke_response(
            received.status.as_u16(),
            received.content_type(),
            &received.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_follows_the_login_host() {
        let cases = [
            ("https://login.salesforce.com", PRODUCTION_AUDIENCE),
            ("https://test.salesforce.com", SANDBOX_AUDIENCE),
            ("https://TEST.salesforce.com.", SANDBOX_AUDIENCE),
            ("https://acme.my.salesforce.com", PRODUCTION_AUDIENCE),
            (
                "https://acme--uat.sandbox.my.salesforce.com",
                SANDBOX_AUDIENCE,
            ),
            (
                "https://acme-dev-ed.develop.my.salesforce.com",
                PRODUCTION_AUDIENCE,
            ),
        ];
        for (url, want) in cases {
            assert_eq!(jwt_audience(&Url::parse(url).unwrap()), want, "{url}");
        }
    }

    #[test]
    fn oauth_url_keeps_only_the_origin() {
        let allow = HostAllowlist::default();
        let url = oauth_url(
            &allow,
            "https://acme.my.salesforce.com/some/path?x=1#f",
            TOKEN_PATH,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://acme.my.salesforce.com/services/oauth2/token"
        );
        assert!(oauth_url(&allow, "https://evil.example", TOKEN_PATH).is_err());
        assert!(oauth_url(&allow, "http://login.salesforce.com", TOKEN_PATH).is_err());
    }

    #[test]
    fn authorize_link_has_pkce_and_parameters() {
        let allow = HostAllowlist::default();
        let link = authorize_url(
            &allow,
            "https://login.salesforce.com",
            "3MVG9key",
            "https://operator.example/callback",
            &["api", "refresh_token"],
            "state-123",
            Some("backup@acme.com"),
        )
        .unwrap();
        let url = Url::parse(&link.url).unwrap();
        assert_eq!(url.host_str(), Some("login.salesforce.com"));
        assert_eq!(url.path(), AUTHORIZE_PATH);
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "3MVG9key");
        assert_eq!(q["redirect_uri"], "https://operator.example/callback");
        assert_eq!(q["scope"], "api refresh_token");
        assert_eq!(q["state"], "state-123");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["login_hint"], "backup@acme.com");
        let verifier = link.pkce_verifier.expose();
        assert!((43..=128).contains(&verifier.len()));
        let expected = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            verifier.to_owned(),
        ));
        assert_eq!(q["code_challenge"], expected.as_str());
        assert!(!format!("{link:?}").contains(verifier));

        assert!(
            authorize_url(
                &allow,
                "https://evil.example",
                "k",
                "https://x/cb",
                &[],
                "s",
                None
            )
            .is_err()
        );
        assert!(
            authorize_url(
                &allow,
                "https://login.salesforce.com",
                "k",
                "not a url",
                &[],
                "s",
                None
            )
            .is_err()
        );
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert!(clock_skew(Some(600)).to_string().contains("600 s behind"));
        assert!(!clock_skew(Some(5)).to_string().contains("5 s behind"));
    }

    #[test]
    fn redating_is_bounded_to_ten_minutes() {
        let ours = 1_700_000_000;
        // (Salesforce's Date minus ours, re-signed?)
        let cases: &[(Option<i64>, bool)] = &[
            (None, false),
            (Some(-3600), false),
            (Some(0), false),
            (Some(59), false),
            (Some(60), true),
            (Some(300), true),
            (Some(600), true),
            (Some(602), true),
            (Some(603), false),
            (Some(3600), false),
            (Some(10 * 365 * 86_400), false),
            (Some(i64::MAX - ours), false),
        ];
        for (ahead, redate) in cases {
            let theirs = ahead.map(|a| ours + a);
            let result = redate_assertion(ours, theirs);
            assert_eq!(result.is_ok(), *redate, "{ahead:?}: {result:?}");
            match result {
                Ok(date) => assert_eq!(Some(date), theirs),
                Err(e) => assert!(
                    matches!(
                        e,
                        SfError::Transient {
                            reason: TransientReason::ClockSkew,
                            ..
                        }
                    ),
                    "{e:?}"
                ),
            }
        }
        let far = redate_assertion(ours, Some(ours + 3600)).unwrap_err();
        assert!(far.to_string().contains("3600 s ahead"), "{far}");
    }

    #[test]
    fn settings_debug_hides_proxy_credentials() {
        let settings = HttpSettings {
            proxy: Some("http://user:hunter2@proxy:3128".into()),
            ..HttpSettings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        let client = HttpSalesforce::new(settings).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    #[test]
    fn bad_settings_are_reported_without_secrets() {
        let err = HttpSalesforce::new(HttpSettings {
            proxy: Some("user:hunter2@@@".into()),
            ..HttpSettings::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::Proxy(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"));

        let err = HttpSalesforce::new(HttpSettings {
            proxy: Some("socks5://proxy:1080".into()),
            ..HttpSettings::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::Proxy(_)), "{err:?}");

        let err = HttpSalesforce::new(HttpSettings {
            extra_ca_pem: Some(b"not a certificate".to_vec()),
            ..HttpSettings::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::CaBundle(_)), "{err:?}");
    }

    #[test]
    fn token_response_parsing() {
        let body = br#"{"access_token":"00Dxx!AQ.secret","instance_url":"https://acme.my.salesforce.com",
            "id":"https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001Sv6AAAS",
            "token_type":"Bearer","issued_at":"1700000000000","signature":"c2ln","scope":"api refresh_token"}"#;
        let token = parse_token_response(body).unwrap();
        assert_eq!(token.access_token.expose(), "00Dxx!AQ.secret");
        assert_eq!(token.refresh_token, None);
        assert_eq!(token.instance_url, "https://acme.my.salesforce.com");
        assert_eq!(token.issued_at.as_deref(), Some("1700000000000"));
        assert!(token.org_and_user().is_some());

        let err = parse_token_response(
            br#"{"access_token":"00Dxx!AQ.secret","token_type":"Bearer","id":"x"}"#,
        )
        .unwrap_err();
        let SfError::Transient { detail, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(detail.contains("instance_url"), "{detail}");
        assert!(!detail.contains("secret"), "{detail}");
    }
}
