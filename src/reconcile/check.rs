//! The Salesforce conversation of one check, and the token Secret write it may need.
//!
//! Order matters with refresh token rotation: a renewed token set is written to the Secret
//! (with a resourceVersion precondition) before the new access token is used. On a write
//! conflict the Secret is read again: if someone else stored newer tokens, ours are dropped and
//! never used, and the same refresh token is never presented twice.
//!
//! When the write keeps failing (a conflict storm, an admission policy, the API server down)
//! the tokens are kept in memory as [`Unpersisted`] and written before the org talks to
//! Salesforce again, so the only working refresh token survives as long as the process does.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info, warn};

use super::decide::{self, CheckKind, CheckResult, HeldPlan};
use super::observe::{Credentials, Seen};
use super::{Context, Error};
use crate::crd::SalesforceOrg;
use crate::salesforce::{
    Identity, LostReason, Salesforce, SfError, TokenResponse, TransientReason,
};
use crate::secret::SecretString;
use crate::token_secret::{self, TokenFile};

/// A check's result and the token Secret's version after it.
#[derive(Debug)]
pub struct CheckRun {
    /// What the check found.
    pub result: CheckResult,
    /// The Secret's resourceVersion after a renewal wrote it.
    pub secret_version: Option<String>,
    /// Salesforce renewed the tokens but the Secret refused them (why): they are held in
    /// memory, and `result` says nothing about them.
    pub not_persisted: Option<String>,
}

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

/// What became of held tokens.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// They are in the Secret now.
    Stored,
    /// Other tokens were stored meanwhile; ours are dropped and never used.
    Superseded,
    /// The Secret still refuses them (why).
    Failed(String),
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

/// The outcome of writing tokens to the Secret.
enum Stored {
    Written(Option<String>),
    Superseded,
    Failed(String),
}

/// Runs one check.
pub async fn run<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    seen: &Seen,
    kind: CheckKind,
) -> Result<CheckRun, Error> {
    let CheckKind::Validate { renew_first } = kind;
    let finish = |outcome: Result<Identity, SfError>, renewed, instance_url, version| CheckRun {
        result: CheckResult {
            outcome,
            renewed,
            instance_url,
        },
        secret_version: version,
        not_persisted: None,
    };
    let Some(creds) = seen.credentials.as_ref() else {
        // The plan only checks orgs whose credentials were read.
        let err = SfError::Transient {
            reason: TransientReason::UnexpectedResponse,
            detail: "credentials were not read".into(),
        };
        return Ok(finish(Err(err), false, None, None));
    };
    let stored = match &seen.tokens {
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
            match renew(ctx, org, ns, seen, creds).await? {
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
                Renewal::Refused(e) => return Ok(finish(Err(e), false, instance, None)),
                Renewal::NotPersisted(error) => {
                    let err = SfError::Transient {
                        reason: TransientReason::UnexpectedResponse,
                        detail: "the renewed tokens are not stored yet".into(),
                    };
                    let mut run = finish(Err(err), false, instance, None);
                    run.not_persisted = Some(error);
                    return Ok(run);
                }
            }
        }
        let (Some(token), Some(url)) = (access.as_ref(), instance.as_ref()) else {
            let err = SfError::Transient {
                reason: TransientReason::UnexpectedResponse,
                detail: "no access token after renewal".into(),
            };
            return Ok(finish(Err(err), renewed, instance, version));
        };
        match ctx.salesforce.userinfo(url, token).await {
            Err(SfError::AccessTokenInvalid) if !renewed => {
                debug!(org = %org.name_any(), "access token dead, renewing");
                renew_now = true;
            }
            outcome => return Ok(finish(outcome, renewed, instance, version)),
        }
    }
}

/// Gets a new access token (refresh or mint) and stores it before anything uses it.
async fn renew<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    seen: &Seen,
    creds: &Credentials,
) -> Result<Renewal, Error> {
    let login = org.spec.login_url.trim_end_matches('/');
    let used_refresh = match &seen.tokens {
        TokenFile::Present(t) => t.refresh_token.clone(),
        _ => None,
    };
    let response = match creds {
        Credentials::WebServer(app) => {
            let Some(rt) = used_refresh.as_ref() else {
                return Ok(Renewal::Refused(SfError::AuthorizationLost {
                    reason: LostReason::Refused,
                    description: "no refresh token is stored".into(),
                }));
            };
            ctx.salesforce.refresh(login, app, rt).await
        }
        Credentials::JwtBearer {
            client_id,
            username,
            private_key,
        } => {
            ctx.salesforce
                .jwt_bearer(login, client_id, username, private_key)
                .await
        }
        Credentials::ClientCredentials(app) => ctx.salesforce.client_credentials(login, app).await,
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => return Ok(Renewal::Refused(e)),
    };
    let rotated = response.refresh_token.is_some();
    match store(
        ctx,
        org,
        ns,
        seen.secret.as_ref(),
        &response,
        creds,
        used_refresh.as_ref(),
    )
    .await
    {
        Stored::Written(version) => {
            info!(org = %org.name_any(), namespace = %ns, rotated, "stored a new access token");
            Ok(Renewal::Stored {
                access: response.access_token,
                instance_url: response.instance_url,
                version,
            })
        }
        Stored::Superseded => Ok(Renewal::Refused(SfError::Transient {
            reason: TransientReason::ConcurrentRefresh,
            detail: "newer tokens were stored while this refresh ran".into(),
        })),
        Stored::Failed(error) => {
            warn!(org = %org.name_any(), namespace = %ns, rotated, %error, "Salesforce issued new tokens but the token Secret refused them; keeping them in memory");
            let uid = org.uid().ok_or(Error::MissingMetadata("uid"))?;
            ctx.hold(
                &uid,
                Unpersisted {
                    response,
                    replaced: used_refresh,
                    credentials: creds.clone(),
                    attempts: 1,
                    error: error.clone(),
                },
            );
            Ok(Renewal::NotPersisted(error))
        }
    }
}

/// Writes tokens held in memory, unless the Secret already has them or newer ones.
pub async fn persist_held<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    seen: &Seen,
    held: &Unpersisted,
) -> Held {
    let plan = decide::held_plan(
        &seen.tokens,
        held.replaced.as_ref(),
        held.response.refresh_token.as_ref(),
        &held.response.access_token,
    );
    match plan {
        HeldPlan::AlreadyStored => Held::Stored,
        HeldPlan::Superseded => Held::Superseded,
        HeldPlan::Write => match store(
            ctx,
            org,
            ns,
            seen.secret.as_ref(),
            &held.response,
            &held.credentials,
            held.replaced.as_ref(),
        )
        .await
        {
            Stored::Written(_) => Held::Stored,
            Stored::Superseded => Held::Superseded,
            Stored::Failed(error) => Held::Failed(error),
        },
    }
}

/// The longest API server text kept in a condition message.
const MAX_ERROR_CHARS: usize = 300;

/// A failed write as a condition message says it: the API server's own words, bounded.
fn describe(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    };
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Writes the tokens with a resourceVersion precondition, re-reading the Secret after a
/// conflict (at most three writes). Never an error: a failure is reported as
/// [`Stored::Failed`] so the caller keeps the tokens.
async fn store<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    current: Option<&Secret>,
    response: &TokenResponse,
    creds: &Credentials,
    used_refresh: Option<&SecretString>,
) -> Stored {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = &org.spec.token_secret_ref.name;
    let mut current = current.cloned();
    for _ in 0..3 {
        let data = token_secret::data_after(
            current.as_ref().and_then(|s| s.data.as_ref()),
            response,
            creds.client_id(),
            creds.client_secret(),
        );
        let secret = token_secret::prepared(org, ns, current.as_ref(), data);
        match token_secret::save(&api, &secret).await {
            Ok(written) => return Stored::Written(written.metadata.resource_version),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Conflict or AlreadyExists: look again.
                current = match api.get_opt(name).await {
                    Ok(current) => current,
                    Err(e) => return Stored::Failed(describe(&e)),
                };
                let now_stored = match token_secret::read(current.as_ref()) {
                    TokenFile::Present(t) => t.refresh_token,
                    _ => None,
                };
                let headless = !matches!(creds, Credentials::WebServer(_));
                if !headless && now_stored.as_ref() != used_refresh {
                    return Stored::Superseded;
                }
            }
            Err(e) => return Stored::Failed(describe(&e)),
        }
    }
    Stored::Failed(
        "HTTP 409 Conflict: another writer changed the token Secret during each of three \
         writes in a row"
            .into(),
    )
}
