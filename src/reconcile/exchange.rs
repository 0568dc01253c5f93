//! The Salesforce conversation of one check, and the token Secret writes it needs.
//!
//! Order matters with refresh token rotation: a renewed token set is written to the Secret
//! (see [`crate::token_store`]) before the new access token is used. If someone else stored
//! newer tokens meanwhile, ours are dropped and never used, and the same refresh token is never
//! presented twice.
//!
//! When the write keeps failing (a conflict storm, an admission policy, the API server down)
//! the tokens are kept in memory as [`Unpersisted`] and written by [`flush_held`] before the
//! org talks to Salesforce again, so the only working refresh token survives as long as the
//! process does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info, warn};

use super::Error;
use super::decide::held::{self, HeldPlan};
use super::decide::{CheckKind, CheckResult, Exchanged, Gathered, HeldTokensState};
use crate::crd::SalesforceOrg;
use crate::credentials::Credentials;
use crate::salesforce::allowlist::HostAllowlist;
use crate::salesforce::{
    Identity, LostReason, Salesforce, SfError, TokenResponse, TransientReason,
};
use crate::secret::SecretString;
use crate::token_secret::{self, TokenFile};
use crate::token_store::{self, Origin, Stored, TokenWrite};

/// Tokens Salesforce issued that the token Secret refused. With rotation they carry the only
/// refresh token that still works, so they are kept (per org, in memory) and written before
/// anything else is asked of Salesforce.
#[derive(Clone, Debug)]
pub struct Unpersisted {
    /// What Salesforce returned.
    pub response: TokenResponse,
    /// The refresh token they replace, as the Secret held it (web server flow).
    pub replaced: Option<SecretString>,
    /// The credentials they were obtained with (the Secret's `sfdx-url` names the app).
    pub credentials: Credentials,
    /// Writes that failed so far, for backoff.
    pub attempts: u32,
    /// Why the last write failed (API server text, never a token).
    pub error: String,
}

/// Tokens Salesforce issued that the token Secret refused, by org uid, for as long as the
/// process lives. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct HeldTokens(Arc<Mutex<HashMap<String, Unpersisted>>>);

impl HeldTokens {
    /// The uids of the orgs whose tokens are held.
    pub fn orgs(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|held| held.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The tokens held for an org.
    pub fn get(&self, uid: &str) -> Option<Unpersisted> {
        self.0.lock().ok()?.get(uid).cloned()
    }

    /// Holds tokens for an org.
    pub fn hold(&self, uid: &str, tokens: Unpersisted) {
        if let Ok(mut held) = self.0.lock() {
            held.insert(uid.to_owned(), tokens);
        }
    }

    /// Lets go of an org's tokens (stored, superseded, or the org is gone).
    pub fn release(&self, uid: &str) {
        if let Ok(mut held) = self.0.lock() {
            held.remove(uid);
        }
    }

    /// Records another failed write of held tokens; returns how many writes have failed.
    pub fn write_failed(&self, uid: &str, error: &str) -> u32 {
        let Ok(mut held) = self.0.lock() else {
            return 1;
        };
        match held.get_mut(uid) {
            Some(tokens) => {
                tokens.attempts = tokens.attempts.saturating_add(1);
                tokens.error = error.to_owned();
                tokens.attempts
            }
            None => 1,
        }
    }
}

impl std::fmt::Debug for HeldTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens: how many orgs wait is all there is to say.
        let held = self.0.lock().map(|held| held.len()).unwrap_or_default();
        write!(f, "HeldTokens({held} orgs)")
    }
}

enum Renewal {
    Stored {
        access: SecretString,
        instance_url: String,
        version: Option<String>,
    },
    Refused(SfError),
    NotPersisted(String),
}

fn transient(detail: &str) -> SfError {
    SfError::Transient {
        reason: TransientReason::UnexpectedResponse,
        detail: detail.into(),
    }
}

/// Where renewed tokens go: the org's token Secret, or memory while it refuses them.
pub struct TokenSink<'a> {
    /// The Secrets of the org's namespace.
    pub secrets: &'a Api<Secret>,
    /// Tokens held in memory.
    pub held: &'a HeldTokens,
    /// Hosts a stored `instance_url` may name.
    pub allowlist: &'a HostAllowlist,
}

/// Runs one check of a gathered org: validate the access token, renewing it first or when it
/// is dead.
pub async fn run<S: Salesforce>(
    salesforce: &S,
    sink: &TokenSink<'_>,
    org: &SalesforceOrg,
    g: &Gathered,
    kind: CheckKind,
) -> Exchanged {
    let CheckKind::Validate { renew_first } = kind;
    let finish = |outcome: Result<Identity, SfError>, renewed, instance_url, version| Exchanged {
        result: CheckResult {
            outcome,
            renewed,
            instance_url,
        },
        secret_version: version,
        not_persisted: None,
    };
    let Some(creds) = g.credentials.as_ref() else {
        // The plan only checks orgs whose credentials were read.
        return finish(
            Err(transient("credentials were not read")),
            false,
            None,
            None,
        );
    };
    let stored = match &g.tokens {
        TokenFile::Present(t) => Some(t),
        _ => None,
    };
    let mut access = stored.and_then(|t| t.access_token.clone());
    let mut instance = stored.and_then(|t| t.instance_url.clone());
    let mut renewed = false;
    let mut version = None;

    let mut renew_now = renew_first || access.is_none();
    loop {
        if renew_now {
            match renew(salesforce, sink, org, g, creds).await {
                Renewal::Stored {
                    access: a,
                    instance_url,
                    version: v,
                } => {
                    access = Some(a);
                    instance = Some(instance_url);
                    version = v;
                    renewed = true;
                }
                Renewal::Refused(e) => return finish(Err(e), false, instance, None),
                Renewal::NotPersisted(error) => {
                    let err = transient("the renewed tokens are not stored yet");
                    let mut run = finish(Err(err), false, instance, None);
                    run.not_persisted = Some(error);
                    return run;
                }
            }
        }
        let (Some(token), Some(url)) = (access.as_ref(), instance.as_ref()) else {
            let err = transient("no access token after renewal");
            return finish(Err(err), renewed, instance, version);
        };
        match salesforce.userinfo(url, token).await {
            Err(SfError::AccessTokenInvalid) if !renewed => {
                debug!(org = %org.name_any(), "access token dead, renewing");
                renew_now = true;
            }
            outcome => return finish(outcome, renewed, instance, version),
        }
    }
}

/// Asks Salesforce for a new access token: a refresh (web server flow) or a mint (headless).
async fn new_token<S: Salesforce>(
    salesforce: &S,
    login: &str,
    creds: &Credentials,
    refresh_token: Option<&SecretString>,
) -> Result<TokenResponse, SfError> {
    match creds {
        Credentials::WebServer(app) => {
            let Some(rt) = refresh_token else {
                return Err(SfError::AuthorizationLost {
                    reason: LostReason::Refused,
                    description: "no refresh token is stored".into(),
                });
            };
            salesforce.refresh(login, app, rt).await
        }
        Credentials::JwtBearer {
            client_id,
            username,
            private_key,
        } => {
            salesforce
                .jwt_bearer(login, client_id, username, private_key)
                .await
        }
        Credentials::ClientCredentials(app) => salesforce.client_credentials(login, app).await,
    }
}

/// Gets a new access token (refresh or mint) and stores it before anything uses it.
async fn renew<S: Salesforce>(
    salesforce: &S,
    sink: &TokenSink<'_>,
    org: &SalesforceOrg,
    g: &Gathered,
    creds: &Credentials,
) -> Renewal {
    let login = org.spec.login_url.trim_end_matches('/');
    let used_refresh = match &g.tokens {
        TokenFile::Present(t) => t.refresh_token.clone(),
        _ => None,
    };
    let response = match new_token(salesforce, login, creds, used_refresh.as_ref()).await {
        Ok(r) => r,
        Err(e) => return Renewal::Refused(e),
    };
    let rotated = response.refresh_token.is_some();
    let replaces = match creds {
        Credentials::WebServer(_) => used_refresh.as_ref(),
        _ => None,
    };
    let write = TokenWrite {
        response: &response,
        client_id: creds.client_id(),
        client_secret: creds.client_secret(),
        origin: Origin::Renewal { replaces },
        allowlist: sink.allowlist,
    };
    match token_store::store(sink.secrets, org, g.token_secret.clone(), &write).await {
        Stored::Written { version, .. } => {
            info!(org = %org.name_any(), namespace = ?org.namespace(), rotated, "stored a new access token");
            Renewal::Stored {
                access: response.access_token,
                instance_url: response.instance_url,
                version,
            }
        }
        Stored::Superseded => Renewal::Refused(SfError::Transient {
            reason: TransientReason::ConcurrentRefresh,
            detail: "newer tokens were stored while this refresh ran".into(),
        }),
        // The old tokens stay: nothing names a host outside the allowlist.
        Stored::HostNotAllowed(e) => Renewal::Refused(SfError::HostNotAllowed(e)),
        // The Secret changed hands since it was read; the next reconcile reports it.
        Stored::NotOwned => {
            Renewal::Refused(transient("the token Secret no longer belongs to this org"))
        }
        Stored::Failed(error) => {
            warn!(org = %org.name_any(), namespace = ?org.namespace(), rotated, %error, "Salesforce issued new tokens but the token Secret refused them; keeping them in memory");
            sink.held.hold(
                &org.uid().unwrap_or_default(),
                Unpersisted {
                    response,
                    replaced: used_refresh,
                    credentials: creds.clone(),
                    attempts: 1,
                    error: error.clone(),
                },
            );
            Renewal::NotPersisted(error)
        }
    }
}

/// Writes tokens held in memory for `org` (uid `uid`), unless the Secret already has them or
/// newer ones. Nothing talks to Salesforce while they wait: with rotation they hold the only
/// working refresh token, and a refresh with the one in the Secret would be a reuse that
/// revokes the grant.
pub async fn flush_held(
    sink: &TokenSink<'_>,
    org: &SalesforceOrg,
    uid: &str,
) -> Result<HeldTokensState, Error> {
    let TokenSink {
        secrets,
        held,
        allowlist,
    } = *sink;
    let Some(tokens) = held.get(uid) else {
        return Ok(HeldTokensState::None);
    };
    let name = org.name_any();
    let current = secrets
        .get_opt(&org.spec.token_secret_ref.name)
        .await
        .map_err(Error::ReadSecrets)?;
    let plan = held::plan(
        &token_secret::read(current.as_ref()),
        tokens.replaced.as_ref(),
        tokens.response.refresh_token.as_ref(),
        &tokens.response.access_token,
    );
    let stored = match plan {
        HeldPlan::AlreadyStored => Stored::Written {
            version: None,
            replaced: None,
        },
        HeldPlan::Superseded => Stored::Superseded,
        HeldPlan::Write => {
            let write = TokenWrite {
                response: &tokens.response,
                client_id: tokens.credentials.client_id(),
                client_secret: tokens.credentials.client_secret(),
                origin: Origin::Renewal {
                    replaces: tokens.replaced.as_ref(),
                },
                allowlist,
            };
            token_store::store(secrets, org, current, &write).await
        }
    };
    Ok(match stored {
        Stored::Written { .. } => {
            held.release(uid);
            info!(org = %name, failed_writes = tokens.attempts, "stored tokens the token Secret had refused");
            HeldTokensState::Stored {
                failed_writes: tokens.attempts,
            }
        }
        Stored::Superseded => {
            held.release(uid);
            info!(org = %name, "newer tokens were stored while ours waited; dropping ours");
            HeldTokensState::Superseded
        }
        // Never stored: the Secret belongs to something else, or the host is not allowed.
        Stored::NotOwned | Stored::HostNotAllowed(_) => {
            held.release(uid);
            warn!(org = %name, "dropping tokens held in memory that may not be stored");
            HeldTokensState::Superseded
        }
        Stored::Failed(error) => {
            let attempts = held.write_failed(uid, &error);
            warn!(org = %name, %error, attempts, "the token Secret still refuses the renewed tokens; keeping them in memory");
            HeldTokensState::StillRefused { error, attempts }
        }
    })
}
