//! Reading what a decision needs: the spec in its checked form, the credentials it names,
//! and the token Secret. Problems become a [`Misconfiguration`] with a message, never a panic.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::decide::{Fingerprint, FlowKind, Misconfiguration, ReauthFailure};
use super::{CHECK_ANNOTATION, Context, Error};
use crate::crd::{AuthFlow, SalesforceOrg, SecretKeyRef, WebServerAuth};
use crate::salesforce::{AppCredentials, Salesforce};
use crate::secret::SecretString;
use crate::token_secret::{self, TokenFile};

/// The credentials a flow needs, read from the Secrets the spec names.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Web server flow: the app (secret optional).
    WebServer(AppCredentials),
    /// JWT bearer flow.
    JwtBearer {
        /// Consumer key.
        client_id: String,
        /// Username to act as.
        username: String,
        /// PEM private key.
        private_key: SecretString,
    },
    /// Client credentials flow.
    ClientCredentials(AppCredentials),
}

impl Credentials {
    /// The consumer key.
    pub fn client_id(&self) -> &str {
        match self {
            Credentials::WebServer(a) | Credentials::ClientCredentials(a) => &a.client_id,
            Credentials::JwtBearer { client_id, .. } => client_id,
        }
    }

    /// The consumer secret, if any.
    pub fn client_secret(&self) -> Option<&SecretString> {
        match self {
            Credentials::WebServer(a) | Credentials::ClientCredentials(a) => {
                a.client_secret.as_ref()
            }
            Credentials::JwtBearer { .. } => None,
        }
    }
}

/// What was read for one reconcile.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The flow, or why it cannot run.
    pub flow: Result<FlowKind, Misconfiguration>,
    /// The credentials, when the flow can run.
    pub credentials: Option<Credentials>,
    /// The token Secret as read (for its data and resourceVersion).
    pub secret: Option<Secret>,
    /// Its contents, checked.
    pub tokens: TokenFile,
    /// What makes a check due early.
    pub fingerprint: Fingerprint,
    /// `spec.checkInterval`.
    pub interval: Duration,
    /// The last failed login through the re-auth link, as the callback recorded it.
    pub reauth_failure: Option<ReauthFailure>,
}

fn misconfigured(reason: &'static str, message: String) -> Misconfiguration {
    Misconfiguration { reason, message }
}

/// Reads one key of a Secret in the org's namespace.
async fn secret_key(
    secrets: &Api<Secret>,
    r: &SecretKeyRef,
    what: &str,
) -> Result<Result<SecretString, Misconfiguration>, Error> {
    let missing = |detail: &str| {
        Ok(Err(misconfigured(
            "CredentialsSecretMissing",
            format!(
                "The {what} is not available: {detail}. Create it with: kubectl create secret \
                 generic {} --from-literal={}=...",
                r.name, r.key
            ),
        )))
    };
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        return missing(&format!("Secret {} does not exist", r.name));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        });
    let Some(bytes) = value else {
        return missing(&format!("Secret {} has no key {}", r.name, r.key));
    };
    match String::from_utf8(bytes) {
        Ok(s) if !s.trim().is_empty() && s.len() <= 64 * 1024 => {
            Ok(Ok(SecretString::new(s.trim().to_owned())))
        }
        _ => missing(&format!(
            "key {} of Secret {} is empty, not text, or too large",
            r.key, r.name
        )),
    }
}

/// A web server app's credentials (the consumer secret read when the spec names one), for
/// the callback's code exchange.
pub async fn web_server_credentials(
    secrets: &Api<Secret>,
    auth: &WebServerAuth,
) -> Result<Result<AppCredentials, Misconfiguration>, Error> {
    let client_secret = match &auth.client_secret_ref {
        Some(r) => match secret_key(secrets, r, "consumer secret").await? {
            Ok(s) => Some(s),
            Err(m) => return Ok(Err(m)),
        },
        None => None,
    };
    Ok(Ok(AppCredentials {
        client_id: auth.client_id.clone(),
        client_secret,
    }))
}

/// Reads everything the decision needs.
pub async fn observe<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
) -> Result<Seen, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets.get_opt(&org.spec.token_secret_ref.name).await?;
    let tokens = token_secret::read(secret.as_ref());
    let fingerprint = Fingerprint {
        generation: org.metadata.generation,
        secret_version: secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone()),
        check_request: org.annotations().get(CHECK_ANNOTATION).cloned(),
    };
    let mut seen = Seen {
        flow: Ok(FlowKind::WebServer),
        credentials: None,
        secret,
        tokens,
        fingerprint,
        interval: crate::crd::DEFAULT_CHECK_INTERVAL,
        reauth_failure: org
            .annotations()
            .get(crate::callback::REAUTH_ERROR_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok()),
    };
    let checked = (|| {
        let flow = org
            .spec
            .auth
            .flow()
            .map_err(|e| misconfigured("InvalidSpec", e.to_string()))?;
        let interval = org
            .spec
            .check_interval()
            .map_err(|e| misconfigured("InvalidSpec", e.to_string()))?;
        ctx.settings
            .allowlist
            .check(&org.spec.login_url)
            .map_err(|e| misconfigured("HostNotAllowed", format!("spec.loginUrl: {e}")))?;
        Ok::<_, Misconfiguration>((flow, interval))
    })();
    let (flow, interval) = match checked {
        Ok(v) => v,
        Err(m) => {
            seen.flow = Err(m);
            return Ok(seen);
        }
    };
    seen.interval = interval;
    let credentials = match flow {
        AuthFlow::WebServer(w) => {
            let client_secret = match &w.client_secret_ref {
                Some(r) => match secret_key(&secrets, r, "consumer secret").await? {
                    Ok(s) => Some(s),
                    Err(m) => {
                        seen.flow = Err(m);
                        return Ok(seen);
                    }
                },
                None => None,
            };
            seen.flow = Ok(FlowKind::WebServer);
            Credentials::WebServer(AppCredentials {
                client_id: w.client_id,
                client_secret,
            })
        }
        AuthFlow::JwtBearer(j) => {
            match secret_key(&secrets, &j.private_key_ref, "JWT private key").await? {
                Ok(key) => {
                    seen.flow = Ok(FlowKind::JwtBearer);
                    Credentials::JwtBearer {
                        client_id: j.client_id,
                        username: j.username,
                        private_key: key,
                    }
                }
                Err(m) => {
                    seen.flow = Err(m);
                    return Ok(seen);
                }
            }
        }
        AuthFlow::ClientCredentials(c) => {
            match secret_key(&secrets, &c.client_secret_ref, "consumer secret").await? {
                Ok(secret) => {
                    seen.flow = Ok(FlowKind::ClientCredentials);
                    Credentials::ClientCredentials(AppCredentials {
                        client_id: c.client_id,
                        client_secret: Some(secret),
                    })
                }
                Err(m) => {
                    seen.flow = Err(m);
                    return Ok(seen);
                }
            }
        }
    };
    seen.credentials = Some(credentials);
    Ok(seen)
}
