//! The Salesforce conversation of one check, and the token Secret write it may need.
//!
//! Order matters with refresh token rotation: a renewed token set is written to the Secret
//! (with a resourceVersion precondition) before the new access token is used, so a crash can
//! never leave the only valid refresh token in memory. On a write conflict the Secret is read
//! again: if someone else stored newer tokens, ours are dropped and never used, and the same
//! refresh token is never presented twice.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info};

use super::decide::{CheckKind, CheckResult};
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
}

enum Renewal {
    Stored {
        access: SecretString,
        instance_url: String,
        version: Option<String>,
    },
    Refused(SfError),
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
    match store(
        ctx,
        org,
        ns,
        seen.secret.as_ref(),
        &response,
        creds,
        used_refresh.as_ref(),
    )
    .await?
    {
        Some(version) => {
            info!(org = %org.name_any(), namespace = %ns, rotated = response.refresh_token.is_some(), "stored a new access token");
            Ok(Renewal::Stored {
                access: response.access_token,
                instance_url: response.instance_url,
                version: Some(version),
            })
        }
        None => Ok(Renewal::Refused(SfError::Transient {
            reason: TransientReason::ConcurrentRefresh,
            detail: "newer tokens were stored while this refresh ran".into(),
        })),
    }
}

/// Writes the tokens with a resourceVersion precondition. `None` means someone else stored
/// newer tokens first, and ours must not be used.
async fn store<S: Salesforce>(
    ctx: &Context<S>,
    org: &SalesforceOrg,
    ns: &str,
    current: Option<&Secret>,
    response: &TokenResponse,
    creds: &Credentials,
    used_refresh: Option<&SecretString>,
) -> Result<Option<String>, Error> {
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
            Ok(written) => return Ok(written.metadata.resource_version),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Conflict or AlreadyExists: look again.
                current = api.get_opt(name).await?;
                let now_stored = match token_secret::read(current.as_ref()) {
                    TokenFile::Present(t) => t.refresh_token,
                    _ => None,
                };
                let headless = !matches!(creds, Credentials::WebServer(_));
                if !headless && now_stored.as_ref() != used_refresh {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
