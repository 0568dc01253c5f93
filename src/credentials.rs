//! The credentials an org's flow needs, read from the Secrets its spec names.
//!
//! Both the reconciler (to refresh or mint) and the callback (to exchange a code) read them
//! here. A missing Secret, a missing key or a value that is not text becomes a
//! [`Misconfiguration`] that says which Secret to create, never a panic and never the value.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::crd::{AuthFlow, SecretKeyRef, WebServerAuth};
use crate::messages;
use crate::reasons::{Misconfiguration, Reason};
use crate::salesforce::AppCredentials;
use crate::secret::SecretString;

/// The longest credential value accepted (a PEM key is a few KiB).
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The credentials a flow needs.
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

/// Reads one key of a Secret in the org's namespace.
async fn secret_key(
    secrets: &Api<Secret>,
    r: &SecretKeyRef,
    what: &str,
) -> Result<Result<SecretString, Misconfiguration>, kube::Error> {
    let missing = |detail: &str| {
        Ok(Err(Misconfiguration::new(
            Reason::CredentialsSecretMissing,
            messages::credentials_missing(what, detail, &r.name, &r.key),
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
        Ok(s) if !s.trim().is_empty() && s.len() <= MAX_VALUE_BYTES => {
            Ok(Ok(SecretString::new(s.trim().to_owned())))
        }
        _ => missing(&format!(
            "key {} of Secret {} is empty, not text, or too large",
            r.key, r.name
        )),
    }
}

/// A web server app's credentials (the consumer secret read when the spec names one).
pub async fn web_server(
    secrets: &Api<Secret>,
    auth: &WebServerAuth,
) -> Result<Result<AppCredentials, Misconfiguration>, kube::Error> {
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

/// The credentials of `flow`.
pub async fn read(
    secrets: &Api<Secret>,
    flow: AuthFlow,
) -> Result<Result<Credentials, Misconfiguration>, kube::Error> {
    Ok(match flow {
        AuthFlow::WebServer(w) => web_server(secrets, &w).await?.map(Credentials::WebServer),
        AuthFlow::JwtBearer(j) => secret_key(secrets, &j.private_key_ref, "JWT private key")
            .await?
            .map(|private_key| Credentials::JwtBearer {
                client_id: j.client_id,
                username: j.username,
                private_key,
            }),
        AuthFlow::ClientCredentials(c) => {
            secret_key(secrets, &c.client_secret_ref, "consumer secret")
                .await?
                .map(|secret| {
                    Credentials::ClientCredentials(AppCredentials {
                        client_id: c.client_id,
                        client_secret: Some(secret),
                    })
                })
        }
    })
}
